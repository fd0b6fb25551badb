package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sharefiles/share/server"
	"github.com/sharefiles/share/transfer"
)

const (
	defaultServer = "http://127.0.0.1:7070"
	defaultPort   = "7070" // of a server named without one
)

// clientFlags are the flags every client command has, and what they
// resolved to (see client).
type clientFlags struct {
	server string
	token  string
	cacert string
	data   string

	url      string // the server's URL, once resolved
	from     string // where url came from, for messages: "--server", "SHARE_SERVER", DATA/api or ""
	dataDir  string // the data directory of the daemon at url, if known
	tokenSrc string // where the token came from, for messages
}

func (f *clientFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", "", "server or peer API: http://HOST:PORT, HOST:PORT or PORT (env SHARE_SERVER; default: the daemon of --data, else "+defaultServer+")")
	fl.StringVar(&f.token, "token", "", "access token (env SHARE_TOKEN; default: the token of the daemon's data directory, for a daemon of yours on this machine)")
	fl.StringVar(&f.cacert, "cacert", "", "PEM file of the CA that signed an https server's certificate")
	fl.StringVar(&f.data, "data", "", "talk to the daemon (serve or peer) of this data directory: its URL from DIR/api, its token from DIR/token (env SHARE_DATA)")
}

// resolve finds the server's URL, the data directory of the daemon behind it
// when it is one of this user's on this machine, and the token:
//
//   - URL: --server, else SHARE_SERVER, else DIR/api of --data (or
//     SHARE_DATA), else the api file of the default data directory, else
//     http://127.0.0.1:7070;
//   - token: --token, else SHARE_TOKEN, else DIR/token of --data, else, for
//     a URL on this machine's loopback, the token of the daemon that the
//     per-user index (see local.go) says listens there, else that of the
//     default data directory.
func (f *clientFlags) resolve() error {
	explicitData := f.data
	if explicitData == "" {
		explicitData = os.Getenv("SHARE_DATA")
	}
	raw := ""
	switch {
	case f.server != "":
		raw, f.from = f.server, "--server"
	case os.Getenv("SHARE_SERVER") != "":
		raw, f.from = os.Getenv("SHARE_SERVER"), "SHARE_SERVER"
	case explicitData != "":
		u, err := readAPIFile(explicitData)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("--data %s: no share daemon runs with this data directory (%s does not exist)\n  start one: share serve --data %s   or   share peer --data %s",
				explicitData, filepath.Join(explicitData, apiFile), explicitData, explicitData)
		}
		if err != nil {
			return fmt.Errorf("--data %s: %w", explicitData, err)
		}
		raw, f.from, f.dataDir = u, filepath.Join(explicitData, apiFile), explicitData
	default:
		if u, err := readAPIFile(defaultDataDir()); err == nil {
			raw, f.from, f.dataDir = u, filepath.Join(defaultDataDir(), apiFile), defaultDataDir()
		} else {
			raw = defaultServer
		}
	}
	u, err := parseServer(raw)
	if err != nil {
		name := f.from
		if name == "" {
			name = "server"
		}
		return usageError{fmt.Errorf("%s %q: %w", name, raw, err)}
	}
	f.url = u.String()
	if f.dataDir == "" && explicitData != "" {
		f.dataDir = explicitData
	}
	if f.dataDir == "" && isLocal(u) {
		if d, ok := lookupDaemon(u); ok {
			f.dataDir = d.Data
		}
	}

	switch {
	case f.token != "":
		f.tokenSrc = "--token"
	case os.Getenv("SHARE_TOKEN") != "":
		f.token, f.tokenSrc = os.Getenv("SHARE_TOKEN"), "SHARE_TOKEN"
	case f.dataDir != "":
		f.token, f.tokenSrc = readToken(f.dataDir), filepath.Join(f.dataDir, tokenFile)
	case isLocal(u):
		f.token, f.tokenSrc = readToken(defaultDataDir()), filepath.Join(defaultDataDir(), tokenFile)
	}
	return nil
}

// parseServer turns what a user may type for a server into its URL:
// http:// and https:// URLs as they are; HOST:PORT as http://HOST:PORT;
// :PORT and PORT as this machine's http://127.0.0.1:PORT; HOST alone as
// http://HOST:7070. Other schemes, paths, queries and user info are errors
// that say what to write.
func parseServer(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	const want = "want http://HOST:PORT (or HOST:PORT, or PORT for this machine), e.g. " + defaultServer
	switch {
	case s == "":
		return nil, errors.New("empty; " + want)
	case isPort(s):
		s = "http://127.0.0.1:" + s
	case strings.HasPrefix(s, ":") && isPort(s[1:]):
		s = "http://127.0.0.1" + s
	case !strings.Contains(s, "://"):
		if _, _, err := net.SplitHostPort(s); err != nil {
			s += ":" + defaultPort
		}
		s = "http://" + s
	}
	u, err := url.Parse(strings.TrimRight(s, "/"))
	if err != nil {
		return nil, errors.New("not a URL; " + want)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("scheme %q: share speaks http and https; %s", u.Scheme, want)
	case u.Host == "" || u.Hostname() == "":
		return nil, errors.New("no host; " + want)
	case u.Port() != "" && !isPort(u.Port()):
		return nil, fmt.Errorf("port %q is not a port number (1-65535); %s", u.Port(), want)
	case u.Path != "" || u.RawQuery != "" || u.Fragment != "":
		return nil, errors.New("the API is at the server's root: leave out the path; " + want)
	case u.User != nil:
		return nil, errors.New("put the token in --token or SHARE_TOKEN, not in the URL; " + want)
	}
	return u, nil
}

// isPort reports whether s is a TCP port number, 1-65535.
func isPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && n <= 65535 && strconv.Itoa(n) == s
}

// client returns a client for the flags, found as resolve documents.
func (f *clientFlags) client() (*server.Client, error) {
	if err := f.resolve(); err != nil {
		return nil, err
	}
	opts := server.ClientOptions{Token: f.token, UserAgent: "share/" + versionString()}
	if f.cacert != "" {
		pem, err := os.ReadFile(f.cacert)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate in it", f.cacert)
		}
		opts.TLSConfig = &tls.Config{RootCAs: pool}
	}
	c, err := server.NewClient(f.url, opts)
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// hint adds what to do next to errors a user can act on.
func hint(err error, f *clientFlags) error {
	switch {
	case errors.Is(err, server.ErrUnauthorized):
		return fmt.Errorf("%w\n  %s", err, f.tokenHint())
	case isConnRefused(err):
		if f.dataDir != "" && f.from == filepath.Join(f.dataDir, apiFile) {
			return fmt.Errorf("%w\n  the daemon of %s is not running: %s was left by one that did not stop cleanly; start it again (share serve --data %s, or share peer --data %s)",
				err, f.dataDir, f.from, f.dataDir, f.dataDir)
		}
		return fmt.Errorf("%w\n  nothing answers at %s: start a server with 'share serve' (or a peer with 'share peer'), or point --server at a running one", err, f.url)
	case isTLSMismatch(err):
		return fmt.Errorf("%w\n  the server at %s speaks plain HTTP: write http://, not https://", err, f.url)
	case errors.Is(err, syscall.ECONNRESET) && strings.HasPrefix(f.url, "http://"):
		return fmt.Errorf("%w\n  if the server uses TLS (share serve --tls-cert), write https://", err)
	case isDNS(err):
		return fmt.Errorf("%w\n  check the host name in %s", err, f.url)
	}
	return err
}

// tokenHint says where the token comes from and how to give the right one.
func (f *clientFlags) tokenHint() string {
	switch {
	case f.token == "":
		return "no token was given: set --token or SHARE_TOKEN to the token the server printed at start (or, for a daemon of yours on this machine, pass its --data DIR)"
	case f.tokenSrc == "--token" || f.tokenSrc == "SHARE_TOKEN":
		return "the token from " + f.tokenSrc + " is not this server's: use the one it printed at start ('token:' line)"
	}
	return "the token in " + f.tokenSrc + " is not that of the server at " + f.url +
		": pass the data directory of the daemon you mean (--data DIR, the 'data:' line it printed), or its token (--token)"
}

// isConnRefused reports a refused TCP connection: nothing listens there.
func isConnRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

func isTLSMismatch(err error) bool {
	var rh tls.RecordHeaderError
	return errors.As(err, &rh) || errors.Is(err, http.ErrSchemeMismatch)
}

func isDNS(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// notFound is the message for a share the server (or peer) does not have:
// the server's reason when it gave one (a peer says where it looked), and
// what to check.
func notFound(id transfer.ID, err error, f *clientFlags) error {
	reason := server.Reason(err)
	reason = strings.TrimPrefix(reason, transfer.ErrNotFound.Error())
	reason = strings.TrimPrefix(strings.TrimPrefix(reason, ":"), " ")
	msg := fmt.Sprintf("no share %s on %s", id, f.url)
	if reason != "" && reason != id.String() {
		return fmt.Errorf("%s: %s", msg, reason) // a peer's own account of where it looked
	}
	return fmt.Errorf("%s\n  check the ID: 'share ls' lists the shares there", msg)
}
