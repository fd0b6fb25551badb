package main

import (
	"io"
	"log/slog"
	"time"
)

// parseDuration parses a Go duration; "0" means none.
func parseDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	return time.ParseDuration(s)
}

// quietLogger logs warnings and errors of library code to stderr, so a
// client command shows what went wrong (a dropped source) and nothing else.
func quietLogger(stderr io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
