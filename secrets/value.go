package secrets

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// MaxValueSize caps a secret's data, as compact JSON, so that a version
// encrypted under its data key and again by the barrier fits in one
// raftstore value with room to spare.
const MaxValueSize = 512 << 10

// CheckData validates a secret's data, a JSON object of at most
// MaxValueSize bytes once compacted, and returns it compacted.
func CheckData(raw []byte) (json.RawMessage, error) {
	if len(raw) > 4*MaxValueSize {
		return nil, fmt.Errorf("%w: data is over %d bytes", ErrInvalidValue, MaxValueSize)
	}
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("%w: data is not UTF-8", ErrInvalidValue)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("%w: data is not valid JSON", ErrInvalidValue)
	}
	if buf.Len() == 0 || buf.Bytes()[0] != '{' {
		return nil, fmt.Errorf("%w: data must be a JSON object", ErrInvalidValue)
	}
	if buf.Len() > MaxValueSize {
		return nil, fmt.Errorf("%w: data is %d bytes, over the limit of %d", ErrInvalidValue, buf.Len(), MaxValueSize)
	}
	return buf.Bytes(), nil
}

// mergePatch applies an RFC 7386 JSON merge patch (a JSON object) to a
// JSON object and returns the result, compacted and validated.
func mergePatch(target, patch []byte) (json.RawMessage, error) {
	p, err := decodeObject(patch)
	if err != nil {
		return nil, err
	}
	t, err := decodeObject(target)
	if err != nil {
		return nil, fmt.Errorf("stored version: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(mergeValue(t, p)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidValue, err)
	}
	return CheckData(bytes.TrimSpace(buf.Bytes()))
}

func decodeObject(raw []byte) (map[string]any, error) {
	if _, err := CheckData(raw); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: data must be a JSON object", ErrInvalidValue)
	}
	return m, nil
}

// mergeValue is RFC 7386 MergePatch(target, patch).
func mergeValue(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = mergeValue(t[k], v)
	}
	return t
}
