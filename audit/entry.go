package audit

import (
	"encoding/json"
	"fmt"
	"time"
)

// Entry types. The API logs a request entry before it acts (so that a
// failing log stops the request before it changes anything) and a response
// entry before it answers.
const (
	TypeRequest  = "request"
	TypeResponse = "response"
	// TypeNotice is the log's own word, such as entries that may be lost.
	TypeNotice = "notice"
)

// Entry is one line of the audit log.
type Entry struct {
	// Time is when the entry was made; zero means now.
	Time       time.Time
	Type       string // TypeRequest or TypeResponse
	RequestID  string
	RemoteAddr string
	// Auth identifies the caller; nil for unauthenticated requests.
	Auth      *Auth
	Method    string
	Path      string // without the query string
	Operation string // e.g. "read", "update", "login"
	// Request and Response are the body fields. Log hashes every value
	// except those of allowed fields (see Hasher.Object).
	Request   map[string]any
	Response  map[string]any
	Status    int
	ErrorCode string
	Latency   time.Duration
	// Notice is the text of a TypeNotice entry.
	Notice string
}

// Auth identifies who made a request. It never holds the token.
type Auth struct {
	Accessor    string
	DisplayName string
	Policies    []string
	// Meta is the token's metadata (role, certificate serial, ...).
	Meta map[string]string
}

// line is the JSON form of an Entry.
type line struct {
	Time       string         `json:"time"`
	Type       string         `json:"type"`
	RequestID  string         `json:"request_id,omitempty"`
	RemoteAddr string         `json:"remote_addr,omitempty"`
	Auth       *authLine      `json:"auth,omitempty"`
	Method     string         `json:"method,omitempty"`
	Path       string         `json:"path,omitempty"`
	Operation  string         `json:"operation,omitempty"`
	Request    map[string]any `json:"request,omitempty"`
	Response   map[string]any `json:"response,omitempty"`
	Status     int            `json:"status,omitempty"`
	ErrorCode  string         `json:"error_code,omitempty"`
	LatencyMS  *float64       `json:"latency_ms,omitempty"`
	Notice     string         `json:"notice,omitempty"`
}

type authLine struct {
	Accessor    string            `json:"accessor,omitempty"`
	DisplayName string            `json:"display_name,omitempty"`
	Policies    []string          `json:"policies,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
}

// encode hashes and serialises e as one line ending in '\n'.
func (l *Logger) encode(e *Entry) ([]byte, error) {
	buf, err := l.encodePooled(e)
	if err != nil {
		return nil, err
	}
	return *buf, nil
}

// encodePooled is encode into a buffer of the pool, to be given back
// with release.
func (l *Logger) encodePooled(e *Entry) (*[]byte, error) {
	if e == nil {
		return nil, fmt.Errorf("audit: nil entry")
	}
	t := e.Time
	if t.IsZero() {
		t = l.clock.Now()
	}
	buf := l.lines.Get().(*[]byte)
	if b, ok := appendLine((*buf)[:0], l.hasher, e, t); ok {
		*buf = b
		return buf, nil
	}
	b, err := encodeSlow(l.hasher, e, t)
	if err != nil {
		l.lines.Put(buf)
		return nil, err
	}
	*buf = b
	return buf, nil
}

// maxPooledLine bounds the line buffers kept for reuse.
const maxPooledLine = 64 << 10

// release returns the buffer of a line that was written to the pool.
func (l *Logger) release(line *[]byte) {
	if cap(*line) <= maxPooledLine {
		l.lines.Put(line)
	}
}

// encodeSlow is encode through encoding/json, for every entry.
func encodeSlow(h *Hasher, e *Entry, t time.Time) ([]byte, error) {
	out := line{
		Time: t.UTC().Format(time.RFC3339Nano), Type: e.Type, RequestID: e.RequestID,
		RemoteAddr: e.RemoteAddr, Method: e.Method, Path: e.Path, Operation: e.Operation,
		Request: h.Object(e.Request), Response: h.Object(e.Response),
		Status: e.Status, ErrorCode: e.ErrorCode, Notice: e.Notice,
	}
	if e.Auth != nil {
		out.Auth = &authLine{Accessor: e.Auth.Accessor, DisplayName: e.Auth.DisplayName, Policies: e.Auth.Policies, Meta: e.Auth.Meta}
	}
	if e.Type == TypeResponse {
		ms := float64(e.Latency.Microseconds()) / 1000
		out.LatencyMS = &ms
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("audit: encode entry: %w", err)
	}
	return append(b, '\n'), nil
}
