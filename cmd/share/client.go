package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sharefiles/share/server"
)

const defaultServer = "http://127.0.0.1:7070"

// clientFlags are the flags every client command has.
type clientFlags struct {
	server string
	token  string
	cacert string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", envOr("SHARE_SERVER", defaultServer), "server or peer API URL (env SHARE_SERVER)")
	fl.StringVar(&f.token, "token", "", "access token (env SHARE_TOKEN; default: read from the local data directory for a server on this machine)")
	fl.StringVar(&f.cacert, "cacert", "", "PEM file of the CA that signed an https server's certificate")
}

// client returns a client for the flags, finding the token as documented.
func (f *clientFlags) client() (*server.Client, error) {
	token := f.token
	if token == "" {
		token = os.Getenv("SHARE_TOKEN")
	}
	if token == "" && isLocal(f.server) {
		if b, err := os.ReadFile(filepath.Join(defaultDataDir(), tokenFile)); err == nil {
			token = strings.TrimSpace(string(b))
		}
	}
	opts := server.ClientOptions{Token: token, UserAgent: "share/" + versionString()}
	if f.cacert != "" {
		pem, err := os.ReadFile(f.cacert)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate in it", f.cacert)
		}
		opts.TLSConfig = &tls.Config{RootCAs: pool}
	}
	c, err := server.NewClient(f.server, opts)
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// isLocal reports whether a server URL names this machine's loopback.
func isLocal(server string) bool {
	u, err := url.Parse(server)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Files in the data directory.
const tokenFile = "token"

// defaultDataDir is SHARE_DATA, else the XDG data directory's "share".
func defaultDataDir() string {
	if d := os.Getenv("SHARE_DATA"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "share")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "share-data")
	}
	return filepath.Join(home, ".local", "share", "share")
}

// hint adds what to do next to errors a user can act on.
func hint(err error, f *clientFlags) error {
	switch {
	case errors.Is(err, server.ErrUnauthorized):
		return fmt.Errorf("%w\n  set --token or SHARE_TOKEN to the token 'share serve' printed", err)
	case isConnRefused(err):
		return fmt.Errorf("%w\n  is a server running at %s? start one with 'share serve', or set --server", err, f.server)
	}
	return err
}

// isConnRefused reports a refused TCP connection: nothing listens there.
func isConnRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
