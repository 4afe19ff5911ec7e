package audit

import (
	"encoding/hex"
	"math"
	"slices"
	"strconv"
	"time"
)

// appendLine is the fast form of encoding an entry: it writes, byte for
// byte, what json.Marshal writes for the line of e with its request and
// response hashed by h (FuzzAppendLine holds it to that), without building
// the hashed maps or reflecting over the line. It reports false for what
// it does not know how to write exactly (values of other types, numbers
// outside the plain decimal range, strings that need escaping); the caller
// then encodes the entry the slow way.
func appendLine(b []byte, h *Hasher, e *Entry, t time.Time) ([]byte, bool) {
	b = append(b, `{"time":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","type":`...)
	var ok bool
	if b, ok = appendString(b, e.Type); !ok {
		return nil, false
	}
	for _, f := range [...]struct{ name, v string }{
		{`,"request_id":`, e.RequestID}, {`,"remote_addr":`, e.RemoteAddr},
	} {
		if b, ok = appendOptString(b, f.name, f.v); !ok {
			return nil, false
		}
	}
	if e.Auth != nil {
		if b, ok = appendAuth(b, e.Auth); !ok {
			return nil, false
		}
	}
	for _, f := range [...]struct{ name, v string }{
		{`,"method":`, e.Method}, {`,"path":`, e.Path}, {`,"operation":`, e.Operation},
	} {
		if b, ok = appendOptString(b, f.name, f.v); !ok {
			return nil, false
		}
	}
	if len(e.Request) > 0 {
		if b, ok = h.appendObject(append(b, `,"request":`...), e.Request); !ok {
			return nil, false
		}
	}
	if len(e.Response) > 0 {
		if b, ok = h.appendObject(append(b, `,"response":`...), e.Response); !ok {
			return nil, false
		}
	}
	if e.Status != 0 {
		b = strconv.AppendInt(append(b, `,"status":`...), int64(e.Status), 10)
	}
	if b, ok = appendOptString(b, `,"error_code":`, e.ErrorCode); !ok {
		return nil, false
	}
	if e.Type == TypeResponse {
		if b, ok = appendFloat(append(b, `,"latency_ms":`...), float64(e.Latency.Microseconds())/1000); !ok {
			return nil, false
		}
	}
	if b, ok = appendOptString(b, `,"notice":`, e.Notice); !ok {
		return nil, false
	}
	return append(b, "}\n"...), true
}

func appendAuth(b []byte, a *Auth) ([]byte, bool) {
	b = append(b, `,"auth":{`...)
	n, ok := len(b), true
	for _, f := range [...]struct{ name, v string }{
		{`,"accessor":`, a.Accessor}, {`,"display_name":`, a.DisplayName},
	} {
		if b, ok = appendOptString(b, f.name, f.v); !ok {
			return nil, false
		}
	}
	if len(a.Policies) > 0 {
		b = append(b, `,"policies":[`...)
		for i, p := range a.Policies {
			if i > 0 {
				b = append(b, ',')
			}
			if b, ok = appendString(b, p); !ok {
				return nil, false
			}
		}
		b = append(b, ']')
	}
	if len(a.Meta) > 0 {
		b = append(b, `,"meta":{`...)
		var kb [8]string
		for i, k := range sortedKeys(kb[:0], a.Meta) {
			if i > 0 {
				b = append(b, ',')
			}
			if b, ok = appendString(b, k); !ok {
				return nil, false
			}
			if b, ok = appendString(append(b, ':'), a.Meta[k]); !ok {
				return nil, false
			}
		}
		b = append(b, '}')
	}
	if len(b) > n {
		b = append(b[:n], b[n+1:]...) // the first field's comma
	}
	return append(b, '}'), true
}

// appendOptString writes ,"name":"v" unless v is empty (omitempty).
func appendOptString(b []byte, name, v string) ([]byte, bool) {
	if v == "" {
		return b, true
	}
	return appendString(append(b, name...), v)
}

// appendString writes s quoted if no character of it needs escaping by
// encoding/json's rules (which escape <, > and &), else reports false.
func appendString(b []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return nil, false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), true
}

// appendFloat writes f as encoding/json does within the range it writes
// in plain decimal.
func appendFloat(b []byte, f float64) ([]byte, bool) {
	if abs := math.Abs(f); math.IsNaN(f) || abs >= 1e21 || abs != 0 && abs < 1e-6 {
		return nil, false
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64), true
}

// sortedKeys appends m's keys to keys (empty; a caller's array on its
// stack saves an allocation for small objects) and sorts them.
func sortedKeys[V any](keys []string, m map[string]V) []string {
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// appendObject writes Object(obj).
func (h *Hasher) appendObject(b []byte, obj map[string]any) ([]byte, bool) {
	b = append(b, '{')
	ok := true
	var kb [16]string
	for i, k := range sortedKeys(kb[:0], obj) {
		if i > 0 {
			b = append(b, ',')
		}
		if b, ok = appendString(b, k); !ok {
			return nil, false
		}
		b = append(b, ':')
		if h.allow[k] {
			b, ok = h.appendWalk(b, obj[k])
		} else {
			b, ok = h.appendHashAll(b, obj[k])
		}
		if !ok {
			return nil, false
		}
	}
	return append(b, '}'), true
}

// appendWalk writes walk(v).
func (h *Hasher) appendWalk(b []byte, v any) ([]byte, bool) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), true
	case string:
		return appendString(b, v)
	case bool:
		return strconv.AppendBool(b, v), true
	case float64:
		return appendFloat(b, v)
	case map[string]any:
		return h.appendObject(b, v)
	case []any:
		return appendArray(b, v, h.appendWalk)
	}
	return nil, false // json.Number and other types: the slow way
}

// appendHashAll writes hashAll(v).
func (h *Hasher) appendHashAll(b []byte, v any) ([]byte, bool) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), true
	case string:
		return h.appendHMAC(b, v), true
	case bool:
		return h.appendHMAC(b, strconv.FormatBool(v)), true
	case float64:
		s, ok := appendFloat(nil, v)
		if !ok {
			return nil, false
		}
		return h.appendHMAC(b, string(s)), true
	case map[string]any:
		b = append(b, '{')
		ok := true
		var kb [16]string
		for i, k := range sortedKeys(kb[:0], v) {
			if i > 0 {
				b = append(b, ',')
			}
			if b, ok = appendString(b, k); !ok {
				return nil, false
			}
			if b, ok = h.appendHashAll(append(b, ':'), v[k]); !ok {
				return nil, false
			}
		}
		return append(b, '}'), true
	case []any:
		return appendArray(b, v, h.appendHashAll)
	}
	return nil, false
}

// appendArray writes the JSON array of v's elements, each written by elem.
func appendArray(b []byte, v []any, elem func([]byte, any) ([]byte, bool)) ([]byte, bool) {
	b = append(b, '[')
	ok := true
	for i, e := range v {
		if i > 0 {
			b = append(b, ',')
		}
		if b, ok = elem(b, e); !ok {
			return nil, false
		}
	}
	return append(b, ']'), true
}

// appendHMAC writes HMAC(v) quoted (its characters need no escaping).
func (h *Hasher) appendHMAC(b []byte, v string) []byte {
	sum := h.sum(v)
	b = append(b, '"')
	b = append(b, HashPrefix...)
	b = hex.AppendEncode(b, sum[:])
	return append(b, '"')
}
