package api

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"
)

// stdDecode is decode without its fast way.
func stdDecode(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err == nil {
		return errTrailing
	}
	return nil
}

var errTrailing = Errorf(400, CodeMalformedJSON, "trailing data")

// FuzzQuickDecode: whenever a fast decoder takes a body, encoding/json
// takes it too and decodes the same request.
func FuzzQuickDecode(f *testing.F) {
	for _, s := range []string{
		`{"plaintext":"aGVsbG8="}`, ` { "plaintext" : "" } `, `{"ciphertext":"custos:v1:abc"}`,
		`{"plaintext":"a","version":2}`, `{"plaintext":"a\u0041"}`, `{"plaintext":"<&>"}`, `{"Plaintext":"x"}`,
		`{"plaintext":"a"}{}`, `{"plaintext":"a" "b"}`, `{"plaintext":"é"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(quick quickDecoder, std any) {
			if !quick.decodeQuick(body) {
				if !reflect.ValueOf(quick).Elem().IsZero() {
					t.Fatalf("a refused body changed the request: %+v", quick)
				}
				return
			}
			if err := stdDecode(body, std); err != nil {
				t.Fatalf("fast way took %q, encoding/json refuses it: %v", body, err)
			}
			if !reflect.DeepEqual(quick, std) {
				t.Fatalf("%q: fast way %+v, encoding/json %+v", body, quick, std)
			}
		}
		check(new(KMSEncryptRequest), new(KMSEncryptRequest))
		check(new(KMSDecryptRequest), new(KMSDecryptRequest))
	})
}

// FuzzQuickEncode: whenever the fast encoder writes a result, it writes
// what encoding/json's Encoder writes.
func FuzzQuickEncode(f *testing.F) {
	f.Add("custos:v1:YWJj", "", false, "", "", 0, false, 3, false)
	f.Add("", "aGk=", true, "", "", 0, false, 0, false)
	f.Add("", "", false, "sig", "mac", 1, true, -2, true)
	f.Add("<x>", "\n", true, "é", "", 2, false, 0, false)
	f.Fuzz(func(t *testing.T, ct, pt string, hasPT bool, sig, mac string, valid int, hasErr bool, version int, _ bool) {
		r := KMSResult{Ciphertext: ct, Signature: sig, HMAC: mac, KeyVersion: version}
		if hasPT {
			r.Plaintext = &pt
		}
		if valid > 0 {
			v := valid == 1
			r.Valid = &v
		}
		if hasErr {
			r.Error = Errorf(400, CodeInvalidArgument, "bad")
		}
		got, ok := r.appendJSON(nil)
		if !ok {
			return
		}
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(r); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("fast %q, encoding/json %q", got, want.Bytes())
		}
	})
}

// The common encryption answer takes the fast way through writeJSON.
func TestQuickEncodeTaken(t *testing.T) {
	rec := httptest.NewRecorder()
	writeJSON(rec, 200, KMSResult{Ciphertext: "custos:v1:YWJj", KeyVersion: 1})
	if got := rec.Body.String(); got != `{"ciphertext":"custos:v1:YWJj","key_version":1}`+"\n" {
		t.Fatalf("body %q", got)
	}
	if _, ok := (KMSResult{Ciphertext: "custos:v1:YWJj", KeyVersion: 1}).appendJSON(nil); !ok {
		t.Fatal("the common answer took the slow way")
	}
	sec := SecretReadResponse{Data: json.RawMessage(`{"v":"YWJj"}`), Metadata: SecretVersionMeta{SecretVersion: SecretVersion{Version: 1, CreatedTime: time.Now().UTC()}}}
	if _, ok := sec.appendJSON(nil); !ok {
		t.Fatal("the common secret took the slow way")
	}
	var req KMSEncryptRequest
	if !req.decodeQuick([]byte(`{"plaintext":"aGVsbG8="}`)) || req.Plaintext != "aGVsbG8=" {
		t.Fatalf("the common request took the slow way: %+v", req)
	}
}

// FuzzQuickEncodeSecret: whenever the fast encoder writes a secret, it
// writes what encoding/json's Encoder writes.
func FuzzQuickEncodeSecret(f *testing.F) {
	f.Add([]byte(`{"v":"YWJj"}`), 3, int64(1764453600123456789), 0, "", false, true, "k", "v", true)
	f.Add([]byte(`{"a":[1,2,{"b":null}],"c":"<"}`), 1, int64(0), 3600, "2026-01-01T00:00:00Z", true, false, "", "", false)
	f.Add([]byte(`{"v": "x y"}`), 0, int64(-62135596800000000000/1000), -7*3600, "", false, false, "é", "\n", true)
	f.Add([]byte(`{"v":"\u2028"}`), 2, int64(253402300800000000000/1000), 86400, "<", false, false, "a", "b", true)
	f.Fuzz(func(t *testing.T, data []byte, version int, nanos int64, zone int, deletion string, deleted, destroyed bool, k, v string, hasMeta bool) {
		if !json.Valid(data) {
			return // secrets.Store holds only valid JSON
		}
		r := SecretReadResponse{Data: data, Metadata: SecretVersionMeta{SecretVersion: SecretVersion{
			Version: version, CreatedTime: time.Unix(0, nanos).In(time.FixedZone("z", zone)),
			DeletionTime: deletion, Deleted: deleted, Destroyed: destroyed,
		}}}
		if hasMeta {
			r.Metadata.CustomMetadata = map[string]string{k: v, "role": "app"}
		}
		got, ok := r.appendJSON(nil)
		var want bytes.Buffer
		err := json.NewEncoder(&want).Encode(r)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("fast way wrote %q, encoding/json refuses: %v", got, err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("fast %q, encoding/json %q", got, want.Bytes())
		}
	})
}
