package stepca

import (
	"bytes"
	"testing"
	"time"
)

// FuzzJWSKeyID: the account lock reads the kid of any request body.
func FuzzJWSKeyID(f *testing.F) {
	f.Add([]byte(`{"protected":"eyJraWQiOiJodHRwczovL2NhL2FjbWUvYWNtZS9hY2NvdW50L2FiYyJ9","payload":"","signature":""}`))
	f.Add([]byte(`{"protected":"e30"}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_ = jwsKeyID(body)
	})
}

// FuzzNonce: only nonces this key made are accepted, and each once.
func FuzzNonce(f *testing.F) {
	n := newNonces(bytes.Repeat([]byte{1}, 32), time.Minute, &fakeClock{})
	good, err := n.create()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		first := n.use(s)
		if second := n.use(s); first == nil && second == nil {
			t.Fatalf("nonce %q accepted twice", s)
		}
	})
}
