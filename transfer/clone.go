//go:build !linux

package transfer

import (
	"errors"
	"os"
)

// reflinkRange: no shared extents on this system.
func reflinkRange(dst, src *os.File, n int64) error {
	return errors.New("reflink not supported on this system")
}

// errNoCopyRange: the kernel cannot copy between these files; copy in user
// space.
var errNoCopyRange = errors.New("copy_file_range not supported here")

// copyRange: no in-kernel copy on this system.
func copyRange(dst, src *os.File, off, n int64) error { return errNoCopyRange }
