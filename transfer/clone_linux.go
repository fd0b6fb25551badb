package transfer

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// reflinkRange makes the first n bytes of dst share src's extents (FICLONE,
// or FICLONERANGE for n > 0; n is a multiple of the file system's block
// size, or 0 for the whole file). It fails on file systems without shared
// extents (ext4, tmpfs: EOPNOTSUPP, EINVAL) and across file systems (EXDEV).
func reflinkRange(dst, src *os.File, n int64) error {
	if n == 0 {
		return unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
	}
	return unix.IoctlFileCloneRange(int(dst.Fd()), &unix.FileCloneRange{Src_fd: int64(src.Fd()), Src_length: uint64(n)})
}

// errNoCopyRange: the kernel cannot copy between these files; copy in user
// space.
var errNoCopyRange = errors.New("copy_file_range not supported here")

// copyRange copies n bytes at offset off of src to the same offset of dst
// with copy_file_range(2), in the kernel (a server-side copy on NFS, shared
// extents on some file systems). It returns errNoCopyRange, having copied
// nothing, where the kernel refuses: before Linux 5.3 across file systems,
// since 5.19 across file system types (EXDEV), or a file system without it.
func copyRange(dst, src *os.File, off, n int64) error {
	roff, woff := off, off
	for done := int64(0); done < n; {
		k, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(min(n-done, 1<<30)), 0)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil && done == 0 && (err == unix.EXDEV || err == unix.ENOSYS || err == unix.EOPNOTSUPP || err == unix.EINVAL || err == unix.EPERM):
			return fmt.Errorf("%w: %v", errNoCopyRange, err)
		case err != nil:
			return &os.PathError{Op: "copy_file_range", Path: dst.Name(), Err: err}
		case k == 0:
			return fmt.Errorf("copy_file_range %s: %w", src.Name(), io.ErrUnexpectedEOF)
		}
		done += int64(k)
	}
	return nil
}
