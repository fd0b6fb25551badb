package transfer

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/sharefiles/share"

// layers is the import direction of the repository: cmd/share -> server,
// node -> transfer. Each package (with its tests) must not depend on the
// paths listed for it; cmd/share may import anything, and nothing outside
// cmd can import cmd/share's internal packages (the go tool refuses it).
var layers = []struct {
	pkg       string
	forbidden []string
}{
	// transfer is the common core of both modes: it never sees either mode,
	// HTTP or libp2p.
	{module + "/transfer", []string{module + "/server", module + "/node", module + "/cmd", "github.com/libp2p", "net/http"}},
	{module + "/transfer/transfertest", []string{module + "/server", module + "/node", module + "/cmd", "github.com/libp2p", "net/http"}},
	// The two modes never import each other: the peer's local API is the
	// server's handler with the node as its backend, composed in cmd/share.
	{module + "/server", []string{module + "/node", module + "/cmd", "github.com/libp2p"}},
	{module + "/node", []string{module + "/server", module + "/cmd"}},
}

// TestDependencies keeps the layering (see layers), for each package's own
// imports and its tests', as `go list -deps -test` reports them.
func TestDependencies(t *testing.T) {
	for _, l := range layers {
		t.Run(strings.TrimPrefix(l.pkg, module+"/"), func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "-test", "-f", "{{.ImportPath}}", l.pkg).Output()
			if err != nil {
				t.Fatalf("go list: %v", err)
			}
			for _, v := range violations(strings.Split(strings.TrimSpace(string(out)), "\n"), l.forbidden) {
				t.Errorf("%s depends on %s", l.pkg, v)
			}
		})
	}
}

// violations returns the dependencies (lines of `go list -deps -test`, such
// as "P" or "P [Q.test]") that are a forbidden package or lie below one.
func violations(deps, forbidden []string) []string {
	var out []string
	for _, line := range deps {
		dep, _, _ := strings.Cut(line, " ")
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				out = append(out, dep)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestViolations(t *testing.T) {
	tests := []struct {
		name      string
		deps      []string
		forbidden []string
		want      []string
	}{
		{"clean", []string{"fmt", module + "/transfer", module + "/server [" + module + "/server.test]"}, []string{module + "/node"}, nil},
		{"direct", []string{"fmt", module + "/node"}, []string{module + "/node"}, []string{module + "/node"}},
		{"below", []string{"github.com/libp2p/go-libp2p/core/peer"}, []string{"github.com/libp2p"}, []string{"github.com/libp2p/go-libp2p/core/peer"}},
		{"test variant", []string{module + "/server [" + module + "/node.test]"}, []string{module + "/server"}, []string{module + "/server"}},
		{"prefix is not a parent", []string{module + "/nodeutil", "net/httptest"}, []string{module + "/node", "net/http"}, nil},
		{"net/http itself", []string{"net/http", "net/http/httptrace"}, []string{"net/http"}, []string{"net/http", "net/http/httptrace"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := violations(tt.deps, tt.forbidden); !slices.Equal(got, tt.want) {
				t.Fatalf("violations = %q, want %q", got, tt.want)
			}
		})
	}
}
