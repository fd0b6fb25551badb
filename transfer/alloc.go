//go:build !linux

package transfer

import "os"

// allocate gives f its final size (sparse until written).
func allocate(f *os.File, size int64) error { return f.Truncate(size) }
