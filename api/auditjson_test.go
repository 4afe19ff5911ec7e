package api

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzJSONObject holds jsonObject's quick reader to encoding/json: whatever
// it accepts, encoding/json decodes to the same map; whatever it refuses
// goes to encoding/json.
func FuzzJSONObject(f *testing.F) {
	for _, s := range []string{
		`{"plaintext":"aGVsbG8="}`,
		` {"plaintext" : "aGVsbG8=", "associated_data":"", "version": 2} `,
		`{"ciphertext":"custos:v1:abc","key_version":1}`,
		`{"data":{"a":1,"b":[true,false,null,-0.5e+3,"x"]},"options":{"cas":0}}`,
		`{"a":{},"b":[],"c":[[]],"d":{"e":{"f":{}}}}`,
		`{"a":1,"a":"two"}`,
		`{"a":"\u00e9"}`, `{"a":"é"}`, "{\"a\":\"\xff\"}", "{\"a\":\"\x01\"}",
		`{"a":01}`, `{"a":1.}`, `{"a":1e}`, `{"a":-}`, `{"a":1e400}`, `{"a":truex}`,
		`{"a":1,}`, `{,}`, `{"a"}`, `[1]`, `null`, `"s"`, `{}`, `{} {}`, `{"a":[1,]}`,
		`{"a":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		quick, ok := readObject(body)
		if !ok {
			return
		}
		var slow map[string]any
		if err := json.Unmarshal(body, &slow); err != nil {
			t.Fatalf("read %q, which encoding/json refuses: %v", body, err)
		}
		if !reflect.DeepEqual(quick, slow) {
			t.Fatalf("%q: read %#v, encoding/json %#v", body, quick, slow)
		}
	})
}

// The audit form of a body is the same as before the quick reader: bodies
// it refuses get encoding/json's answer, and what is no object is hashed
// whole.
func TestJSONObject(t *testing.T) {
	for _, tc := range []struct {
		body string
		want map[string]any
	}{
		{``, nil},
		{"  \n", nil},
		{`{"plaintext":"aGk="}`, map[string]any{"plaintext": "aGk="}},
		{`{"a":"\u00e9","n":1}`, map[string]any{"a": "é", "n": 1.0}},
		{"{\"a\":\"\xff\"}", map[string]any{"a": "\ufffd"}},
		{`null`, nil},
		{`[1,2]`, map[string]any{"body": "[1,2]"}},
		{`{"a":1e400}`, map[string]any{"body": `{"a":1e400}`}},
		{`{"a":`, map[string]any{"body": `{"a":`}},
	} {
		if got := jsonObject([]byte(tc.body)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %#v, want %#v", tc.body, got, tc.want)
		}
	}
}

// BenchmarkJSONObject compares the audit's reading of an encrypt request
// body (1 KiB of plaintext) with encoding/json's, in the same run.
func BenchmarkJSONObject(b *testing.B) {
	body, _ := json.Marshal(map[string]string{"plaintext": base64.StdEncoding.EncodeToString(make([]byte, 1024))})
	b.Run("quick", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if jsonObject(body) == nil {
				b.Fatal("nil")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
