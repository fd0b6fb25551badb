package transfer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestPermanent(t *testing.T) {
	dial := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"refused by the source", fmt.Errorf("GET /x: %w", ErrSourceRefused), true},
		{"not found", fmt.Errorf("manifest: %w", ErrNotFound), true},
		{"removed", fmt.Errorf("chunk 3: %w", ErrRemoved), true},
		{"chunk range", ErrChunkRange, true},
		{"bad id", ErrBadID, true},
		{"bad name", ErrBadName, true},
		{"bad manifest", ErrBadManifest, true},
		{"bad request", ErrBadRequest, true},
		{"too large", ErrTooLarge, true},
		{"bad chunk", &ChunkError{Index: 1}, true},
		{"exists", ErrExists, true},
		{"no sources left", ErrNoSources, true},
		{"remote disk full", fmt.Errorf("PUT: %w", ErrNoSpace), true},
		{"local disk full", &os.PathError{Op: "write", Path: "f", Err: syscall.ENOSPC}, true},
		{"quota", &os.PathError{Op: "write", Path: "f", Err: syscall.EDQUOT}, true},
		{"read-only file system", &os.PathError{Op: "open", Path: "f", Err: syscall.EROFS}, true},
		{"unknown host", fmt.Errorf("GET: %w", dnsErr(true, false)), true},
		{"temporary DNS failure", dnsErr(false, true), false},
		{"certificate", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, true},
		{"unknown authority", fmt.Errorf("x: %w", x509.UnknownAuthorityError{}), true},
		{"host name", x509.HostnameError{Host: "x"}, true},
		{"not TLS", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, true},
		{"busy", fmt.Errorf("chunk 1: %w", ErrBusy), false},
		{"chunk not held", ErrChunkNotHeld, false},
		{"incomplete", ErrIncomplete, false},
		{"stalled", ErrStalled, false},
		{"connection refused", dial(syscall.ECONNREFUSED), false},
		{"connection reset", dial(syscall.ECONNRESET), false},
		{"timeout", context.DeadlineExceeded, false},
		{"cut short", io.ErrUnexpectedEOF, false},
		{"unknown", errors.New("something odd"), false},
		// Text is never the criterion: these only say the words.
		{"text of a refusal", errors.New("no such host"), false},
		{"text of a permanent error", errors.New("share not found"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Permanent(tt.err); got != tt.want {
				t.Fatalf("Permanent(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func dnsErr(notFound, temporary bool) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "nowhere.invalid", IsNotFound: notFound, IsTemporary: temporary}}
}
