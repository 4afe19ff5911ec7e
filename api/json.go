package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
)

// DefaultMaxBodyBytes is the default request body limit: a 1 MiB value
// in base64, with room for the JSON around it.
const DefaultMaxBodyBytes = 2 << 20

// decode reads one JSON object from the request body into v, strictly: no
// unknown fields, no trailing data. An empty body decodes as {}.
func decode(r *http.Request, v any) error {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	body := io.Reader(r.Body)
	if q, ok := v.(quickDecoder); ok {
		raw, unread := r.Body.(*auditedBody)
		if unread = unread && raw.Len() == len(raw.b); unread {
			if q.decodeQuick(raw.b) {
				return nil
			}
		} else {
			b, err := readBody(r, math.MaxInt64) // r.Body enforces the limit
			if err != nil {
				return decodeError(err)
			}
			if q.decodeQuick(b) {
				return nil
			}
			body = bytes.NewReader(b)
		}
	}
	dec := json.NewDecoder(body)
	if !isVault(r) { // Vault's clients send fields custos does not know
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return decodeError(err)
		}
		return Errorf(http.StatusBadRequest, CodeMalformedJSON, "request body holds more than one JSON value")
	}
	return nil
}

func decodeError(err error) *Error {
	var (
		maxErr  *http.MaxBytesError
		typeErr *json.UnmarshalTypeError
		synErr  *json.SyntaxError
	)
	switch {
	case errors.As(err, &maxErr):
		return Errorf(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "request body is over the limit of %d bytes", maxErr.Limit)
	case errors.As(err, &typeErr):
		return Errorf(http.StatusBadRequest, CodeMalformedJSON, "field %q must be %s", typeErr.Field, typeErr.Type)
	case errors.As(err, &synErr):
		return Errorf(http.StatusBadRequest, CodeMalformedJSON, "malformed JSON at byte %d", synErr.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return Errorf(http.StatusBadRequest, CodeUnknownField, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Errorf(http.StatusBadRequest, CodeMalformedJSON, "truncated JSON")
	}
	return Errorf(http.StatusBadRequest, CodeMalformedJSON, "malformed JSON: %s", sanitize(err.Error()))
}

// auditedBody is a request body that the audit middleware has read:
// decode takes its bytes as they are rather than reading them again.
type auditedBody struct {
	bytes.Reader // one allocation with the body
	b            []byte
}

func newAuditedBody(b []byte) *auditedBody {
	ab := &auditedBody{b: b}
	ab.Reset(b)
	return ab
}

func (*auditedBody) Close() error { return nil }

// sanitize keeps decoder messages short; they never echo body values.
func sanitize(s string) string {
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

// The header values of every JSON response, shared: net/http only reads
// them, Header.Set replaces and Header.Add appends to a copy (capacity 1).
var (
	headerJSON    = []string{"application/json"}[:1:1]
	headerNoStore = []string{"no-store"}[:1:1]
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h["Content-Type"], h["Cache-Control"] = headerJSON, headerNoStore // canonical keys; Set without its slices
	w.WriteHeader(status)
	if q, ok := v.(quickEncoder); ok {
		if b, ok := q.appendJSON(nil); ok {
			if bw, ok := w.(*bufferedWriter); ok {
				bw.adopt(b)
				return
			}
			_, _ = w.Write(b)
			return
		}
	}
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

type errorBody struct {
	Error struct {
		*Error
		RequestID string `json:"request_id,omitempty"`
	} `json:"error"`
}

// writeError sends err as the API error document and records its code for
// the audit and metrics middleware.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := toError(err)
	var body errorBody
	body.Error.Error = e
	body.Error.RequestID = requestID(r.Context())
	if rs := reqState(r.Context()); rs != nil {
		rs.errCode = e.Code
		if e.Code == CodeInternal {
			rs.internal = err
		}
		if rs.vault {
			writeVaultError(w, e)
			return
		}
	}
	writeJSON(w, e.Status, body)
}

// ok sends a 200 with v as the body.
func ok(w http.ResponseWriter, v any) { writeJSON(w, http.StatusOK, v) }
