// Package audit writes custos's audit log: one JSON object per line, for
// every request and response, appended to a file.
//
// What it promises:
//   - Log is synchronous. When it returns nil the line is in the file (one
//     write(2) to a file opened O_APPEND, no buffer in the process), so it
//     survives the process crashing. When it returns an error the caller
//     must fail the request: custos serves nothing it cannot audit.
//   - Durability against a machine crash: the file is fsynced every
//     SyncInterval (1s by default) when something was written, or after
//     every entry when SyncInterval is negative.
//   - A full disk (or any failing write or fsync) fails only the entries
//     that cannot be recorded, and the log recovers by itself when space
//     returns, with no SIGHUP. A failed write fails its own Log (a partial
//     line is ended before the next entry). After a failed fsync, entries
//     written since the last good one may be lost, so every Log writes and
//     fsyncs its entry at once, failing while that fails; the first that
//     succeeds first records a notice of the possible loss, naming the
//     time of the last good fsync, and the log resumes its interval.
//     Errors from writing and syncing match ErrUnavailable.
//   - No secret in plain text: the request and response fields of an entry
//     are hashed by a Hasher (HMAC-SHA256 under the cluster's audit key)
//     except for an allow-list of field names, deny by default. The token
//     itself is never an entry field; the token's accessor is. The path is
//     logged as given, so the API must keep secrets out of paths.
//   - The file is created with mode 0600 (an existing one is narrowed to
//     0600). Reopen, called on SIGHUP after a rotation, starts a new file at
//     the same path.
package audit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// ErrClosed is returned by Log after Close.
var ErrClosed = errors.New("audit: log closed")

// ErrUnavailable matches the errors of an entry that could not be written
// or synced (a full disk, an I/O error): retry later.
var ErrUnavailable = errors.New("audit: log unavailable")

// Clock tells the time of entries that do not carry one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Config configures a Logger.
type Config struct {
	// Path of the log file. Required.
	Path string
	// HMACKey is the cluster's audit key, at least MinKeySize bytes.
	HMACKey []byte
	// AllowKeys are request and response fields logged in plain text; nil
	// means DefaultAllowKeys().
	AllowKeys []string
	// SyncInterval is how often written entries are fsynced; negative
	// means after every entry (slow: one fsync per request).
	SyncInterval time.Duration
	// Clock stamps entries without a time; nil means the system clock.
	Clock Clock
}

// DefaultConfig returns a Config that fsyncs every second; the caller sets
// Path and HMACKey.
func DefaultConfig() Config {
	return Config{SyncInterval: time.Second}
}

// Validate checks the fields.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("audit: config: Path is required")
	case len(c.HMACKey) < MinKeySize:
		return fmt.Errorf("audit: config: HMACKey must be at least %d bytes", MinKeySize)
	case c.SyncInterval == 0:
		return errors.New("audit: config: SyncInterval must be positive, or negative to sync every entry")
	}
	return nil
}

// file is what the Logger needs of an *os.File.
type file interface {
	io.WriteCloser
	Sync() error
}

// Logger appends entries to the audit log. It is safe for concurrent use.
type Logger struct {
	cfg    Config
	hasher *Hasher
	clock  Clock
	open   func(path string) (file, error)
	lines  sync.Pool // of *[]byte: buffers for encoding entries

	mu       sync.Mutex
	f        file
	dirty    bool      // written since the last fsync
	partial  bool      // the last write stopped inside a line
	syncErr  error     // a failed fsync: entries since lastSync may be lost
	lastSync time.Time // the last good fsync (or the open)
	closed   bool

	stop chan struct{}
	done chan struct{}
}

// Open opens (or creates) the log file and starts the fsync timer.
func Open(cfg Config) (*Logger, error) {
	return openWith(cfg, openFile)
}

func openWith(cfg Config, open func(string) (file, error)) (*Logger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	allow := cfg.AllowKeys
	if allow == nil {
		allow = DefaultAllowKeys()
	}
	h, err := NewHasher(cfg.HMACKey, allow)
	if err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	f, err := open(cfg.Path)
	if err != nil {
		return nil, err
	}
	l := &Logger{cfg: cfg, hasher: h, clock: cfg.Clock, open: open, f: f, lastSync: cfg.Clock.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	l.lines.New = func() any { b := make([]byte, 0, 1024); return &b }
	if cfg.SyncInterval > 0 {
		go l.syncLoop()
	} else {
		close(l.done)
	}
	return l, nil
}

// openFile opens path for appending, creating it 0600.
func openFile(path string) (file, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: open log: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
		err = f.Chmod(0o600)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: open log: %w", err)
	}
	return f, nil
}

// Hasher returns the Logger's hasher, for values the caller hashes itself.
func (l *Logger) Hasher() *Hasher { return l.hasher }

// Log hashes the entry's request and response fields and appends it. An
// error means the entry may not be in the log: fail the request. Log keeps
// no reference to e (nor to its fields): the caller may change and log it
// again.
func (l *Logger) Log(e *Entry) error {
	buf, err := l.encodePooled(e)
	if err != nil {
		return err
	}
	defer l.release(buf) // written or failed: the file has it or never will
	line := *buf
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.syncErr != nil {
		return l.recoverLocked(line)
	}
	if err := l.writeLocked(line); err != nil {
		return err
	}
	if l.cfg.SyncInterval < 0 {
		return l.syncNowLocked()
	}
	l.dirty = true
	return nil
}

// writeLocked appends line, ending a line a failed write broke first.
func (l *Logger) writeLocked(line []byte) error {
	if l.partial {
		line = append([]byte{'\n'}, line...)
	}
	n, err := l.f.Write(line)
	if err != nil {
		if n > 0 {
			l.partial = true
		}
		return fmt.Errorf("%w: write: %w", ErrUnavailable, err)
	}
	l.partial = false
	return nil
}

// syncNowLocked fsyncs, recording a failure.
func (l *Logger) syncNowLocked() error {
	if err := l.f.Sync(); err != nil {
		if l.syncErr == nil {
			l.syncErr = err
		}
		return fmt.Errorf("%w: fsync: %w", ErrUnavailable, err)
	}
	l.dirty, l.lastSync = false, l.clock.Now()
	return nil
}

// recoverLocked logs line after a failed fsync: a notice of the entries
// that may be lost and line, synced at once. The first success clears the
// failure.
func (l *Logger) recoverLocked(line []byte) error {
	notice, err := l.encode(&Entry{Type: TypeNotice, Notice: fmt.Sprintf(
		"an fsync of the audit log failed (%v): entries written after %s may be lost",
		l.syncErr, l.lastSync.UTC().Format(time.RFC3339Nano))})
	if err != nil {
		return err
	}
	if err := l.writeLocked(append(notice, line...)); err != nil {
		return fmt.Errorf("%w (an earlier fsync failed too)", err)
	}
	failed := l.syncErr
	l.syncErr = nil
	if err := l.syncNowLocked(); err != nil {
		l.syncErr = failed // keep the first failure and its time
		return err
	}
	return nil
}

// syncLoop fsyncs written entries every SyncInterval.
func (l *Logger) syncLoop() {
	defer close(l.done)
	t := time.NewTicker(l.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			l.syncLocked()
			l.mu.Unlock()
		}
	}
}

// syncLocked fsyncs if anything was written, recording a failure.
func (l *Logger) syncLocked() {
	if !l.dirty || l.closed || l.syncErr != nil {
		return
	}
	_ = l.syncNowLocked()
}

// Reopen starts a new file at the configured path, for log rotation: the
// operator renames the file and sends SIGHUP. The old file is fsynced and
// closed. If the new file cannot be opened the old one stays in use and the
// error is returned. A successful Reopen clears an earlier fsync failure.
func (l *Logger) Reopen() error {
	f, err := l.open(l.cfg.Path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		f.Close()
		return ErrClosed
	}
	old := l.f
	l.f, l.dirty, l.partial, l.syncErr, l.lastSync = f, false, false, nil, l.clock.Now()
	if err := errors.Join(old.Sync(), old.Close()); err != nil {
		return fmt.Errorf("audit: reopened, but closing the previous file failed (its last entries may be lost): %w", err)
	}
	return nil
}

// Close fsyncs and closes the log. Later Logs return ErrClosed.
func (l *Logger) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	err := errors.Join(l.f.Sync(), l.f.Close())
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	if err != nil {
		return fmt.Errorf("audit: close log: %w", err)
	}
	return nil
}
