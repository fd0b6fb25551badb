package netem

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
)

// RouterRules loads a home router's nftables ruleset (table ip home) into
// a network namespace: the one of nsfd, or with nsfd < 0 the calling
// thread's. What leaves by the interface wan is masqueraded (with symmetric,
// to a random port per connection); the forward and input hooks accept
// replies (conntrack established or related), forward from lan to wan, let
// anything but wan reach the router, and drop the rest. It is the ruleset
// of AddHome's routers and of the NAT containers of the docker-compose
// demo (cmd/share/internal/netem/natrouter).
func RouterRules(nsfd int, wan, lan string, symmetric bool) error {
	var opts []nftables.ConnOption
	if nsfd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsfd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "home"})
	accept := nftables.ChainPolicyAccept
	drop := nftables.ChainPolicyDrop
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: append(ifname(expr.MetaKeyOIFNAME, wan, expr.CmpOpEq),
		&expr.Masq{Random: symmetric})})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: replies()})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: append(append(ifname(expr.MetaKeyIIFNAME, lan, expr.CmpOpEq),
		ifname(expr.MetaKeyOIFNAME, wan, expr.CmpOpEq)...), &expr.Verdict{Kind: expr.VerdictAccept})})
	in := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: replies()})
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: append(ifname(expr.MetaKeyIIFNAME, wan, expr.CmpOpNeq),
		&expr.Verdict{Kind: expr.VerdictAccept})})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: load the router's rules: %w", err)
	}
	return nil
}

// ifname matches the input or output interface's name (key) against name.
func ifname(key expr.MetaKey, name string, op expr.CmpOp) []expr.Any {
	b := make([]byte, 16) // IFNAMSIZ, NUL-padded
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: b},
	}
}

// replies accepts packets of connections conntrack knows (ct state
// established,related accept).
func replies() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
}

// SetDefaultRoute makes gw the default gateway of the calling thread's
// network namespace, replacing any other.
func SetDefaultRoute(gw netip.Addr) error {
	if err := netlink.RouteReplace(&netlink.Route{Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("default route via %v: %w", gw, err)
	}
	return nil
}
