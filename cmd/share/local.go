package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/sharefiles/share/transfer"
)

// How a client finds a daemon of the same user on this machine, and its
// token, without the user copying files around (as kubo does with
// $IPFS_PATH/api):
//
//   - every daemon (serve and peer) writes its API's URL to DATA/api once it
//     listens, and removes it when it stops cleanly; the token is DATA/token.
//     A client given --data DIR (or SHARE_DATA) talks to the daemon of DIR.
//     A daemon that was killed leaves DATA/api behind: a client that cannot
//     connect to it says so, and the next daemon of DIR replaces it (the
//     store's lock makes sure no other one runs).
//   - every daemon also registers in a per-user index (indexDir, mode 0700;
//     one 0600 file per daemon: its listen address, URL, data directory and
//     process ID), so that --server http://127.0.0.1:PORT alone finds the
//     data directory, hence the token, of the daemon listening there. An
//     entry whose process is gone is stale: ignored and removed.

// Files in the data directory.
const (
	tokenFile = "token"
	apiFile   = "api" // the URL of the daemon's API while it runs
)

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

// indexDir is the per-user index of running daemons: $XDG_RUNTIME_DIR/share
// (a per-user tmpfs that the system empties at logout and boot), else
// share/daemons in the XDG state directory ($XDG_STATE_HOME, else
// ~/.local/state).
func indexDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "share")
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "share", "daemons")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), fmt.Sprintf("share-daemons-%d", os.Getuid()))
	}
	return filepath.Join(home, ".local", "state", "share", "daemons")
}

// daemonEntry is one daemon in the index.
type daemonEntry struct {
	Listen string `json:"listen"` // the API's listen address, e.g. 0.0.0.0:7070
	API    string `json:"api"`    // its URL, as written to DATA/api
	Data   string `json:"data"`   // the absolute data directory
	PID    int    `json:"pid"`
}

// indexName is the index file of a daemon listening on addr: one per
// address, which only one process can listen on at a time.
func indexName(addr *net.TCPAddr) string {
	ip := "any"
	if addr.IP != nil && !addr.IP.IsUnspecified() {
		ip = strings.ReplaceAll(addr.IP.String(), ":", "_")
	}
	return fmt.Sprintf("%s-%d.json", ip, addr.Port)
}

// registerDaemon writes DATA/api and the daemon's index entry for an API
// listening on ln at apiURL. The returned function removes both; call it
// when the daemon stops. A failure to write the index is not fatal (the
// client then needs --data or a token): it is returned as a warning.
func registerDaemon(data string, ln *net.TCPAddr, apiURL string) (unregister func(), warning error, err error) {
	apiPath := filepath.Join(data, apiFile)
	if err := transfer.WriteFileAtomic(apiPath, []byte(apiURL+"\n"), 0o600); err != nil {
		return nil, nil, fmt.Errorf("write %s: %w", apiPath, err)
	}
	abs, err := filepath.Abs(data)
	if err != nil {
		abs = data
	}
	dir := indexDir()
	entryPath := filepath.Join(dir, indexName(ln))
	warning = func() error {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := checkPrivateDir(dir); err != nil {
			return err
		}
		b, _ := json.Marshal(daemonEntry{Listen: ln.String(), API: apiURL, Data: abs, PID: os.Getpid()})
		return transfer.WriteFileAtomic(entryPath, append(b, '\n'), 0o600)
	}()
	if warning != nil {
		warning = fmt.Errorf("local clients will need --data %s or the token: cannot register in %s: %w", data, dir, warning)
		entryPath = ""
	}
	return func() {
		os.Remove(apiPath)
		if entryPath != "" {
			os.Remove(entryPath)
		}
	}, warning, nil
}

// checkPrivateDir refuses an index directory that another user owns or can
// write: its entries tell clients where to send their tokens.
func checkPrivateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%s belongs to uid %d, not to this user", dir, st.Uid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by others (mode %v); make it 0700", dir, fi.Mode().Perm())
	}
	return nil
}

// readAPIFile returns the URL in DATA/api.
func readAPIFile(data string) (string, error) {
	b, err := os.ReadFile(filepath.Join(data, apiFile))
	if err != nil {
		return "", err
	}
	u := strings.TrimSpace(string(b))
	if u == "" {
		return "", fmt.Errorf("%s is empty", filepath.Join(data, apiFile))
	}
	return u, nil
}

// readToken returns the token kept in DATA/token, or "".
func readToken(data string) string {
	b, err := os.ReadFile(filepath.Join(data, tokenFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// lookupDaemon finds, in the index, the running daemon of this user that
// answers at server (a URL of this machine's loopback), and returns its data
// directory. Entries of processes that are gone are removed.
func lookupDaemon(server *url.URL) (daemonEntry, bool) {
	dir := indexDir()
	if checkPrivateDir(dir) != nil {
		return daemonEntry{}, false
	}
	port, err := strconv.Atoi(server.Port())
	if err != nil {
		return daemonEntry{}, false
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return daemonEntry{}, false
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var d daemonEntry
		if json.Unmarshal(b, &d) != nil {
			continue
		}
		addr, err := net.ResolveTCPAddr("tcp", d.Listen)
		if err != nil || addr.Port != port || !sameLoopbackHost(addr.IP, server.Hostname()) {
			continue
		}
		if !processAlive(d.PID) {
			os.Remove(path)
			continue
		}
		// The daemon of d.Data still says it is there.
		if u, err := readAPIFile(d.Data); err != nil || u != d.API {
			continue
		}
		return d, true
	}
	return daemonEntry{}, false
}

// sameLoopbackHost reports whether a client dialling host reaches a daemon
// listening on ip: ip is a wildcard, or the same loopback address, or host
// is "localhost" and ip a loopback address.
func sameLoopbackHost(ip net.IP, host string) bool {
	if ip == nil || ip.IsUnspecified() {
		return true
	}
	if host == "localhost" {
		return ip.IsLoopback()
	}
	h := net.ParseIP(host)
	return h != nil && h.Equal(ip)
}

// processAlive reports whether a process of this user with this ID runs:
// signal 0 reaches it and, where /proc shows it, it is ours (root may signal
// any process, and an ID may have been reused).
func processAlive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	fi, err := os.Stat("/proc/" + strconv.Itoa(pid))
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return !ok || int(st.Uid) == os.Getuid()
}

// isLocal reports whether a server URL names this machine's loopback.
func isLocal(u *url.URL) bool {
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
