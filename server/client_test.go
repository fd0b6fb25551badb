package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sharefiles/share/transfer"
)

// A host name that does not resolve is a mistake (permanent) until the
// server has answered once; after that it is a server that is away, as a
// stopped container's name is for Docker's DNS (transient: retried).
func TestClientHostAway(t *testing.T) {
	ts := startServer(t, nil, nil)
	addr := strings.TrimPrefix(ts.URL, "http://")
	var away atomic.Bool
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		if away.Load() {
			return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: "server", IsNotFound: true}}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	c, err := NewClient("http://server:7070", ClientOptions{Token: testToken, HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	steps := []struct {
		away      bool
		ok        bool
		permanent bool
	}{
		{away: true, permanent: true}, // never reached: a typo
		{away: false, ok: true},
		{away: true, permanent: false}, // reached before: away
		{away: false, ok: true},
	}
	for k, s := range steps {
		away.Store(s.away)
		tr.CloseIdleConnections()
		_, err := c.List(ctx)
		if s.ok != (err == nil) || err != nil && transfer.Permanent(err) != s.permanent {
			t.Fatalf("step %d (away %v): err %v, permanent %v; want ok %v, permanent %v", k, s.away, err, transfer.Permanent(err), s.ok, s.permanent)
		}
		var dns *net.DNSError
		if err != nil && s.permanent && !errors.As(err, &dns) {
			t.Fatalf("step %d: the DNS error is lost: %v", k, err)
		}
	}
}

// An https URL for a plain-HTTP server is refused for good, not retried.
func TestClientSchemeMismatch(t *testing.T) {
	ts := startServer(t, nil, nil)
	c, err := NewClient(strings.Replace(ts.URL, "http://", "https://", 1), ClientOptions{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.List(context.Background())
	if !errors.Is(err, http.ErrSchemeMismatch) || !transfer.Permanent(err) {
		t.Fatalf("https to an http server: %v (permanent %v)", err, transfer.Permanent(err))
	}
}
