package transfer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The have journal records which chunks of a partial share are held. It is
// append-only: a chunk is journaled after its verified bytes were written, so
// after a crash of the process (kill -9) every journaled chunk is in the page
// cache and on disk. To survive a crash of the machine too, a checkpoint
// fsyncs the data files and then appends a marker that vouches for the records
// before it; records after the last marker are re-verified on open.
//
// Format: the 8-byte magic journalMagic, then 8-byte records, each a
// big-endian uint32 tag and uint32 value:
//
//	tag 1 (have):       value is a chunk index
//	tag 2 (checkpoint): value is a record count; the records before it are durable
//
// A torn record at the end, an unknown tag or an index out of range ends the
// journal: what follows is ignored.
const (
	journalMagic      = "sharehv1"
	journalRecordSize = 8
	tagHave           = 1
	tagCheckpoint     = 2
)

// parseJournal decodes a journal of an n-chunk share. trusted lists chunks
// vouched for by a checkpoint; unsure lists chunks journaled after the last
// checkpoint, which must be verified before use. Both are free of duplicates.
func parseJournal(b []byte, n int) (trusted, unsure []int, err error) {
	if len(b) < len(journalMagic) || string(b[:len(journalMagic)]) != journalMagic {
		return nil, nil, errors.New("have journal: bad magic")
	}
	b = b[len(journalMagic):]
	type rec struct{ pos, chunk int }
	var haves []rec
	durable := 0 // records before this position are vouched for
	for pos := 0; len(b) >= journalRecordSize; pos++ {
		tag := binary.BigEndian.Uint32(b)
		val := binary.BigEndian.Uint32(b[4:])
		b = b[journalRecordSize:]
		switch {
		case tag == tagHave && int64(val) < int64(n):
			haves = append(haves, rec{pos, int(val)})
		case tag == tagCheckpoint && int64(val) <= int64(pos):
			durable = max(durable, int(val))
		default:
			b = nil // corrupt from here on
		}
	}
	seen := make(map[int]bool, len(haves))
	for _, r := range haves {
		if seen[r.chunk] {
			continue
		}
		seen[r.chunk] = true
		if r.pos < durable {
			trusted = append(trusted, r.chunk)
		} else {
			unsure = append(unsure, r.chunk)
		}
	}
	return trusted, unsure, nil
}

// journal appends records to an open journal file. Its owner serializes calls.
type journal struct {
	f       *os.File
	records int // records in the file
}

func encodeRecord(tag, val uint32) []byte {
	var r [journalRecordSize]byte
	binary.BigEndian.PutUint32(r[:], tag)
	binary.BigEndian.PutUint32(r[4:], val)
	return r[:]
}

// writeJournal atomically replaces the journal at path with one that holds
// haves, all vouched for, and opens it for appending.
func writeJournal(path string, haves []int) (*journal, error) {
	var buf bytes.Buffer
	buf.WriteString(journalMagic)
	for _, i := range haves {
		buf.Write(encodeRecord(tagHave, uint32(i)))
	}
	buf.Write(encodeRecord(tagCheckpoint, uint32(len(haves))))
	if err := WriteFileAtomic(path, buf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	return &journal{f: f, records: len(haves) + 1}, nil
}

func (j *journal) appendHave(i int) error {
	if _, err := j.f.Write(encodeRecord(tagHave, uint32(i))); err != nil {
		return fmt.Errorf("have journal: %w", err)
	}
	j.records++
	return nil
}

// appendCheckpoint vouches for the first upto records and fsyncs the journal.
// The caller has fsynced the data those records name.
func (j *journal) appendCheckpoint(upto int) error {
	if _, err := j.f.Write(encodeRecord(tagCheckpoint, uint32(upto))); err != nil {
		return fmt.Errorf("have journal: %w", err)
	}
	j.records++
	return j.f.Sync()
}

func (j *journal) close() error { return j.f.Close() }

// WriteFileAtomic writes data to path so that path holds either its old
// content or all of data, also after a crash: it writes a temporary file in
// the same directory, fsyncs it, renames it over path and fsyncs the
// directory.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, workName(".", filepath.Base(path), ".tmp-")+"*") // a name that fits, whatever path's
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return syncDir(dir)
}

// syncDir fsyncs a directory, making renames and creations in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
