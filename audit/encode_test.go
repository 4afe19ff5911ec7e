package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// fuzzEntry builds an entry from fuzz input: the strings go into its text
// fields, body (a JSON object, if it is one) into the request and the
// response.
func fuzzEntry(s1, s2 string, body []byte, status int, latency int64, response bool) *Entry {
	var obj map[string]any
	_ = json.Unmarshal(body, &obj)
	e := &Entry{
		Type: TypeRequest, RequestID: s1, RemoteAddr: "192.0.2.1:443", Method: "POST", Path: s2,
		Operation: "kms-encrypt", Request: obj, Status: status, ErrorCode: s1, Notice: s2,
		Auth: &Auth{Accessor: s1, DisplayName: s2, Policies: []string{"default", s1}, Meta: map[string]string{s1: s2, "role": "r"}},
	}
	if response {
		e.Type, e.Response, e.Latency = TypeResponse, obj, time.Duration(latency)
	}
	return e
}

// FuzzAppendLine: whenever the fast encoder writes an entry, it writes
// exactly what encoding/json writes.
func FuzzAppendLine(f *testing.F) {
	f.Add("id", "/v1/kms/encrypt/k", []byte(`{"plaintext":"aGk=","name":"k","version":2,"n":[1,2.5,null,true,{"a":"b"}],"x":{"name":1e-7}}`), 200, int64(1234567), true)
	f.Add("", "", []byte(`{}`), 0, int64(0), false)
	f.Add("a<b", "é", []byte(`{"name":"\u2028","ttl":1e21,"v":"\n"}`), 403, int64(-5), true)
	h, err := NewHasher(testKey, DefaultAllowKeys())
	if err != nil {
		f.Fatal(err)
	}
	at := time.Date(2026, 11, 29, 22, 0, 0, 123456789, time.FixedZone("x", 3600))
	f.Fuzz(func(t *testing.T, s1, s2 string, body []byte, status int, latency int64, response bool) {
		e := fuzzEntry(s1, s2, body, status, latency, response)
		want, err := encodeSlow(h, e, at)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := appendLine(nil, h, e, at); ok && !bytes.Equal(got, want) {
			t.Fatalf("fast encoding differs:\n got %s\nwant %s", got, want)
		}
	})
}

// The entries the API writes for its common requests take the fast way.
func TestAppendLineCommonEntries(t *testing.T) {
	h, err := NewHasher(testKey, DefaultAllowKeys())
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	for _, body := range []string{
		`{"plaintext":"aGVsbG8="}`,
		`{"ciphertext":"custos:v1:abc","key_version":1}`,
		`{"data":{"v":"x"},"metadata":{"version":3,"created_time":"2026-01-01T00:00:00Z","destroyed":false,"deletion_time":""}}`,
	} {
		e := fuzzEntry("0123abcd", "/v1/secret/bench/data/seed/1", []byte(body), 200, 1500000, true)
		got, ok := appendLine(nil, h, e, at)
		if !ok {
			t.Fatalf("%s: the slow way", body)
		}
		want, err := encodeSlow(h, e, at)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("fast encoding differs:\n got %s\nwant %s", got, want)
		}
	}
}

// BenchmarkEncode compares the fast encoder with encoding/json on the
// entries of an encryption request and of a secret read's response.
func BenchmarkEncode(b *testing.B) {
	h, err := NewHasher(testKey, DefaultAllowKeys())
	if err != nil {
		b.Fatal(err)
	}
	pt := strings.Repeat("QUJD", 342) // 1 KiB in base64
	entries := map[string]*Entry{
		"encrypt-request": fuzzEntry("0123456789abcdef01234567", "/v1/kms/encrypt/bench", []byte(`{"plaintext":"`+pt+`"}`), 0, 0, false),
		"kv-get-response": fuzzEntry("0123456789abcdef01234567", "/v1/secret/bench/data/seed/1",
			[]byte(`{"data":{"v":"`+pt+`"},"metadata":{"version":1,"created_time":"2026-11-29T22:00:00.123456789Z","deletion_time":"","destroyed":false}}`), 200, 1500000, true),
	}
	at := time.Now()
	for name, e := range entries {
		b.Run(name+"/fast", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := appendLine(make([]byte, 0, 1024), h, e, at); !ok {
					b.Fatal("slow way")
				}
			}
		})
		b.Run(name+"/encoding-json", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := encodeSlow(h, e, at); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
