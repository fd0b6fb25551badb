//go:build !linux

package transfer

import (
	"errors"
	"os"
)

const directAlign = 4096

func openDirect(*os.Root, string) (*os.File, error) {
	return nil, errors.New("direct I/O not supported on this system")
}
