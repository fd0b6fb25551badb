//go:build !unix

package transfer

import (
	"os"
	"path/filepath"
)

// lockDir creates dir/lock; without flock it cannot keep a second process out.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
}
