package kms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/custos-pki/custos/raftstore"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// installKey creates a key and replaces the material of its version 1 with
// key, so that a standard's vectors run through the public API.
func installKey(t *testing.T, n *testNode, name string, typ KeyType, key []byte) {
	t.Helper()
	if _, err := n.k.CreateKey(bg, name, KeyOptions{Type: typ}); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(material{Version: 1, Type: typ, Key: key})
	if _, err := n.b.txn(bg, []raftstore.Op{{Kind: raftstore.OpPut, Table: tableKeyMat, Key: materialKey(name, 1), Value: raw}}); err != nil {
		t.Fatal(err)
	}
	n.k.Invalidate(name)
}

func pkcs8(t *testing.T, priv any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// The GCM specification's test case 16 (AES-256, 96-bit IV, with AAD), as a
// Vault-layout aes256-gcm96 ciphertext: nonce || ciphertext || tag.
func TestKnownAnswerAESGCM(t *testing.T) {
	n := newNode(t)
	installKey(t, n, "nist", TypeAES256GCM96, unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"))
	p := unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
		"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39")
	ad := unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
	body := unhex("cafebabefacedbaddecaf888" +
		"522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
		"8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662" +
		"76fc6ece0f4e1768cddf8853bb2d551b")
	ct := append(appendHeader(nil, 1), body...)
	got, err := n.k.Decrypt(bg, "nist", ct, CryptOptions{AD: ad})
	if err != nil || hex.EncodeToString(got) != hex.EncodeToString(p) {
		t.Fatalf("Decrypt = %x, %v", got, err)
	}
	text, _ := FormatCiphertext(ct)
	if got, err := n.k.Decrypt(bg, "nist", []byte(text), CryptOptions{AD: ad}); err != nil || string(got) != string(p) {
		t.Fatalf("Decrypt(text form) = %x, %v", got, err)
	}
}

// aes256-gcm96-hkdf: a message computed with an independent implementation
// (Python cryptography's HKDF and AESGCM) from key 00..1f.
func TestKnownAnswerAESGCMHKDF(t *testing.T) {
	n := newNode(t)
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	installKey(t, n, "derived", TypeAES256GCM96HKDF, key)
	body := unhex("404142434445464748494a4b4c4d4e4f606162636465666768696a6b" +
		"40b5970c597ca613ffda960ff920e2764948b4b2fea2caf188d3cddd3ca294f36fa1c02cef1b214b8910")
	got, err := n.k.Decrypt(bg, "derived", append(appendHeader(nil, 1), body...), CryptOptions{AD: []byte("ad")})
	if err != nil || string(got) != "custos subkey known answer" {
		t.Fatalf("Decrypt = %q, %v", got, err)
	}
}

// RFC 8032, 7.1 TEST 1 (Ed25519) and 7.3 TEST abc (Ed25519ph).
func TestKnownAnswerEd25519(t *testing.T) {
	n := newNode(t)
	for _, tc := range []struct {
		name, seed, msg, sig string
		o                    SignOptions
	}{
		{"ed25519", "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", "",
			"e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
			SignOptions{}},
		{"ed25519ph", "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42", "616263",
			"98a70222f0b8121aa9d30f813d683f809e462b469c7ff87639499bb94e6dae4131f85042463c2a355a2003d062adf5aaa10b8c61e636062aaad11c2a26083406",
			SignOptions{Hash: crypto.SHA512}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			installKey(t, n, tc.name, TypeEd25519, pkcs8(t, ed25519.NewKeyFromSeed(unhex(tc.seed))))
			sig, err := n.k.Sign(bg, tc.name, unhex(tc.msg), tc.o)
			if err != nil {
				t.Fatal(err)
			}
			v, raw, _ := ParseCiphertext(sig)
			if v != 1 || hex.EncodeToString(raw) != tc.sig {
				t.Fatalf("signature v%d %x", v, raw)
			}
			if ok, err := n.k.Verify(bg, tc.name, unhex(tc.msg), sig, tc.o); !ok || err != nil {
				t.Fatalf("Verify = %v, %v", ok, err)
			}
		})
	}
}

// RFC 6979, A.2.5: the P-256/SHA-256 signature of "sample" verifies.
func TestKnownAnswerECDSA(t *testing.T) {
	n := newNode(t)
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), unhex("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721"))
	if err != nil {
		t.Fatal(err)
	}
	installKey(t, n, "rfc6979", TypeECDSAP256, pkcs8(t, priv))
	der := unhex("3046022100efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716" +
		"022100f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8")
	sig := append(appendHeader(nil, 1), der...)
	if ok, err := n.k.Verify(bg, "rfc6979", []byte("sample"), sig, SignOptions{}); !ok || err != nil {
		t.Fatalf("Verify = %v, %v", ok, err)
	}
	if ok, _ := n.k.Verify(bg, "rfc6979", []byte("samplf"), sig, SignOptions{}); ok {
		t.Fatal("signature verified for another message")
	}
}

// RFC 4231, test cases 1 and 2. The hmac type holds 32-byte keys, so the
// vectors (20- and 4-byte keys) run against the version's HMAC directly.
func TestKnownAnswerHMAC(t *testing.T) {
	m := &keyMeta{Type: TypeHMAC}
	for _, tc := range []struct {
		key, data string
		want      map[crypto.Hash]string
	}{
		{"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", hex.EncodeToString([]byte("Hi There")), map[crypto.Hash]string{
			crypto.SHA256: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
			crypto.SHA384: "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
			crypto.SHA512: "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
		}},
		{hex.EncodeToString([]byte("Jefe")), hex.EncodeToString([]byte("what do ya want for nothing?")), map[crypto.Hash]string{
			crypto.SHA256: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
		}},
	} {
		v := &version{hmacKey: unhex(tc.key)}
		for h, want := range tc.want {
			got, err := v.hmac(&entry{meta: m}, unhex(tc.data), SignOptions{Hash: h})
			if err != nil || hex.EncodeToString(got) != want {
				t.Errorf("HMAC-%v = %x, %v", h, got, err)
			}
		}
	}
}
