package transfer

import (
	"os"
	"syscall"
)

// directAlign is the alignment O_DIRECT needs of offsets, lengths and
// buffers: the logical block size of nearly every device.
const directAlign = 4096

// openDirect opens path in root for direct (uncached) writes, or returns an
// error if the file system does not support them (tmpfs, some FUSE).
func openDirect(root *os.Root, path string) (*os.File, error) {
	return root.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
}
