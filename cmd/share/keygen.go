package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/sharefiles/share/node"
)

type keygenOptions struct {
	swarm bool
	out   string
}

func newKeygenCmd(stdout io.Writer) *cobra.Command {
	var o keygenOptions
	cmd := &cobra.Command{
		Use:   "keygen --swarm [-o FILE]",
		Short: "Write a new swarm key, for a private swarm of peers",
		Long: `Write a new random swarm key to FILE (default ./swarm.key), readable by its owner
only (mode 0600). An existing file is never replaced.

A swarm key makes a private swarm: give the same file to every peer of the swarm
(share peer --swarm-key FILE; copy it with 'scp -p' or another way that keeps it
secret) and peers without it cannot even complete a connection to them. The file
is in kubo's swarm.key format (libp2p's private-network protector, PSK v1).
A private swarm runs over TCP only: QUIC cannot carry the pre-shared key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runKeygen(o, stdout)
		},
	}
	cmd.Flags().BoolVar(&o.swarm, "swarm", false, "write a swarm key (the only kind of key there is so far)")
	cmd.Flags().StringVarP(&o.out, "output", "o", node.SwarmKeyFile, "file to write")
	return cmd
}

func runKeygen(o keygenOptions, stdout io.Writer) error {
	if !o.swarm {
		return usageError{errors.New("keygen: say which key: --swarm")}
	}
	psk, err := node.WriteSwarmKey(o.out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\nswarm key %s (fingerprint; 'share status' of every peer in the swarm shows it)\n", o.out, node.SwarmKeyFingerprint(psk))
	fmt.Fprintf(stdout, "start every peer of the swarm with: share peer --swarm-key %s\n", o.out)
	return nil
}
