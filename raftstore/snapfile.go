package raftstore

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
)

// Snapshots. A snapshot is written in a compact form: the live keys and
// values of the state file, bucket by bucket in key order, gzip-compressed.
// It holds none of the state file's free or half-empty pages, and a node
// that installs it (a follower that fell behind, a node whose state file
// was lost) builds a state file with full pages from it.
//
//	"custos snapshot" version(1) gzip(record* end)
//	record: 0x01 name<v>          open a bucket inside the current one
//	        0x02 key<v> value<v>  a key and value in the current bucket
//	        0x03                  close the current bucket
//	end:    0x00 buckets(v) pairs(v)
//
// x<v> is x after its length as a uvarint; (v) is a uvarint. The counts in
// the end record and gzip's CRC-32 and length catch a truncated or damaged
// stream. A snapshot that does not open with the magic is read as a whole
// bbolt file: the form of snapshots written before this one, and of
// backups (see Backup). A node of an earlier version cannot install a
// compact snapshot: in a rolling upgrade, upgrade the followers first and
// the leader last (a leader of the earlier version sends whole files,
// which every version reads).

// snapMagic opens a compact snapshot; snapVersion follows it.
const (
	snapMagic   = "custos snapshot"
	snapVersion = 1
)

// Records of the compact form.
const (
	recEnd byte = iota
	recBucket
	recPair
	recClose
)

// Limits of what a compact snapshot may hold; the state file never holds
// more (bbolt's key limit; values the size of a transaction's results).
const (
	maxSnapKey   = bolt.MaxKeySize
	maxSnapValue = 64 << 20
	maxSnapDepth = 8
)

// restoreBatch is how many bytes of keys and values one write transaction
// takes while a compact snapshot is turned into a state file.
const restoreBatch = 16 << 20

// errSnapshot wraps what is wrong with a snapshot's bytes.
var errSnapshot = errors.New("malformed snapshot")

// writeCompact writes the state as tx sees it to w in the compact form.
func writeCompact(w io.Writer, tx *bolt.Tx) error {
	if _, err := w.Write(append([]byte(snapMagic), snapVersion)); err != nil {
		return err
	}
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(zw, 64<<10)
	sw := &snapWriter{w: bw}
	err = tx.ForEach(func(name []byte, b *bolt.Bucket) error { return sw.bucket(name, b) })
	if err != nil {
		return err
	}
	sw.w.WriteByte(recEnd)
	sw.uvarint(sw.buckets)
	sw.uvarint(sw.pairs)
	if err := bw.Flush(); err != nil {
		return err
	}
	return zw.Close()
}

type snapWriter struct {
	w              *bufio.Writer
	buf            [binary.MaxVarintLen64]byte
	buckets, pairs uint64
}

func (s *snapWriter) uvarint(v uint64) {
	s.w.Write(binary.AppendUvarint(s.buf[:0], v))
}

func (s *snapWriter) bytes(b []byte) {
	s.uvarint(uint64(len(b)))
	s.w.Write(b)
}

// bucket writes the bucket b, named name, and the buckets inside it. The
// bufio.Writer keeps the first error and returns it from Flush.
func (s *snapWriter) bucket(name []byte, b *bolt.Bucket) error {
	s.w.WriteByte(recBucket)
	s.bytes(name)
	s.buckets++
	err := b.ForEach(func(k, v []byte) error {
		if v == nil {
			if inner := b.Bucket(k); inner != nil {
				return s.bucket(k, inner)
			}
		}
		s.w.WriteByte(recPair)
		s.bytes(k)
		s.bytes(v)
		s.pairs++
		return nil
	})
	s.w.WriteByte(recClose)
	return err
}

// isCompact reports whether head, the first bytes of a snapshot, open the
// compact form.
func isCompact(head []byte) bool { return bytes.HasPrefix(head, []byte(snapMagic)) }

// writeStateFile writes a snapshot of either form from r to a new state
// file at path, synced to disk.
func writeStateFile(path string, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(len(snapMagic) + 1)
	if !isCompact(head) {
		return writeSynced(path, br)
	}
	if _, err := br.Discard(len(head)); err != nil {
		return err
	}
	if v := head[len(snapMagic)]; v != snapVersion {
		return fmt.Errorf("%w: unknown version %d", errSnapshot, v)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	db, err := openBolt(path)
	if err != nil {
		return err
	}
	err = readCompact(db, br)
	if err == nil {
		err = db.Sync()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// readCompact fills the empty database db from a compact stream (after its
// magic and version).
func readCompact(db *bolt.DB, r io.Reader) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("%w: %v", errSnapshot, err)
	}
	// A state file is never larger than a backup may be; the limit stops
	// a stream that would inflate without end.
	return readRecords(db, io.LimitReader(zr, maxBackupSize))
}

// readRecords fills the empty database db from the records in r, up to
// and including the end record, which must end r. It writes in
// transactions of about restoreBatch bytes. Keys arrive in order, so
// pages are filled to the brim.
func readRecords(db *bolt.DB, r io.Reader) error {
	sr := &snapReader{r: bufio.NewReaderSize(r, 64<<10)}
	tx, err := db.Begin(true)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var path [][]byte       // names of the open buckets, outermost first
	var open []*bolt.Bucket // the same buckets, in tx
	var buckets, pairs uint64
	var pending int
	for {
		kind, err := sr.r.ReadByte()
		if err != nil {
			return sr.fail(err)
		}
		switch kind {
		case recBucket:
			name, err := sr.bytes(maxSnapKey)
			if err != nil {
				return err
			}
			if len(path) == maxSnapDepth {
				return fmt.Errorf("%w: buckets nested deeper than %d", errSnapshot, maxSnapDepth)
			}
			var b *bolt.Bucket
			if len(open) == 0 {
				b, err = tx.CreateBucket(name)
			} else {
				b, err = open[len(open)-1].CreateBucket(name)
			}
			if err != nil {
				return fmt.Errorf("%w: bucket %q: %v", errSnapshot, name, err)
			}
			b.FillPercent = 1
			path, open = append(path, name), append(open, b)
			buckets++
		case recPair:
			if len(open) == 0 {
				return fmt.Errorf("%w: a key outside any bucket", errSnapshot)
			}
			k, err := sr.bytes(maxSnapKey)
			if err != nil {
				return err
			}
			v, err := sr.bytes(maxSnapValue)
			if err != nil {
				return err
			}
			if err := open[len(open)-1].Put(k, v); err != nil {
				return fmt.Errorf("%w: key %q: %v", errSnapshot, k, err)
			}
			pairs++
			pending += len(k) + len(v)
		case recClose:
			if len(open) == 0 {
				return fmt.Errorf("%w: closes a bucket it did not open", errSnapshot)
			}
			path, open = path[:len(path)-1], open[:len(open)-1]
		case recEnd:
			if len(open) != 0 {
				return fmt.Errorf("%w: ends inside a bucket", errSnapshot)
			}
			nb, err := sr.uvarint()
			if err != nil {
				return err
			}
			np, err := sr.uvarint()
			if err != nil {
				return err
			}
			if nb != buckets || np != pairs {
				return fmt.Errorf("%w: it holds %d buckets and %d keys, its end says %d and %d", errSnapshot, buckets, pairs, nb, np)
			}
			// Reading past the end checks gzip's CRC-32 and length.
			if _, err := sr.r.ReadByte(); err == nil {
				return fmt.Errorf("%w: data after the end", errSnapshot)
			} else if !errors.Is(err, io.EOF) {
				return sr.fail(err)
			}
			return tx.Commit()
		default:
			return fmt.Errorf("%w: unknown record %#x", errSnapshot, kind)
		}
		if pending >= restoreBatch {
			if tx, open, err = nextTx(db, tx, path); err != nil {
				return err
			}
			pending = 0
		}
	}
}

// nextTx commits tx and opens the next transaction on the same buckets.
func nextTx(db *bolt.DB, tx *bolt.Tx, path [][]byte) (*bolt.Tx, []*bolt.Bucket, error) {
	if err := tx.Commit(); err != nil {
		return tx, nil, err
	}
	tx, err := db.Begin(true)
	if err != nil {
		return tx, nil, err
	}
	open := make([]*bolt.Bucket, len(path))
	for i, name := range path {
		if i == 0 {
			open[i] = tx.Bucket(name)
		} else {
			open[i] = open[i-1].Bucket(name)
		}
		open[i].FillPercent = 1
	}
	return tx, open, nil
}

type snapReader struct {
	r *bufio.Reader
}

// fail turns a read error into a snapshot error: the stream ended early
// or gzip found it damaged.
func (s *snapReader) fail(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %v", errSnapshot, err)
}

func (s *snapReader) uvarint() (uint64, error) {
	v, err := binary.ReadUvarint(s.r)
	if err != nil {
		return 0, s.fail(err)
	}
	return v, nil
}

// bytes reads a length and that many bytes, at most limit. Memory grows
// with the bytes read, not with the length claimed.
func (s *snapReader) bytes(limit int) ([]byte, error) {
	n, err := s.uvarint()
	if err != nil {
		return nil, err
	}
	if n > uint64(limit) {
		return nil, fmt.Errorf("%w: a length of %d, the limit is %d", errSnapshot, n, limit)
	}
	if n <= 64<<10 {
		b := make([]byte, n)
		if _, err := io.ReadFull(s.r, b); err != nil {
			return nil, s.fail(err)
		}
		return b, nil
	}
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, s.r, int64(n)); err != nil {
		return nil, s.fail(err)
	}
	return buf.Bytes(), nil
}
