//go:build !linux

package server

import (
	"errors"
	"syscall"
)

// setRcvLowat is Linux only here: elsewhere SO_RCVLOWAT does not hold back
// poll's readiness, so it would save nothing.
func setRcvLowat(syscall.RawConn, int) error { return errors.ErrUnsupported }
