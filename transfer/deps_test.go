package transfer

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the layering: transfer is the common core of both
// modes and must never see either mode, HTTP or libp2p.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	forbidden := []string{
		"github.com/sharefiles/share/server",
		"github.com/sharefiles/share/node",
		"github.com/sharefiles/share/cmd",
		"github.com/libp2p/",
		"net/http",
	}
	for dep := range strings.FieldsSeq(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("transfer depends on %s", dep)
			}
		}
	}
}
