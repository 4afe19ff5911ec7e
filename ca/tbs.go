package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// A leaf is linted before it is signed, and what the issuer signs is the
// very TBSCertificate that was linted. crypto/x509 builds the
// TBSCertificate and hands it whole to a crypto.MessageSigner; tbsKeeper
// is one that keeps it and signs nothing. The lints run over those bytes
// wrapped with a placeholder signature (lintSignature), and the issuer's
// KMS key then signs the same bytes. That costs one TBS encoding and one
// signature per certificate, where signing a lint copy with a throwaway
// key (Boulder's lint issuer) costs two of each and two more
// verifications.

// tbsCertificate is a DER TBSCertificate ready to be signed.
type tbsCertificate struct {
	der   []byte            // the TBSCertificate
	algID []byte            // its signature AlgorithmIdentifier, DER
	opts  crypto.SignerOpts // the hash (and PSS options) x509 asked for
	pub   crypto.PublicKey  // the issuer's public key
}

// errTBSKept stops x509.CreateCertificate once tbsKeeper has the
// TBSCertificate.
var errTBSKept = errors.New("ca: TBSCertificate kept, not signed")

// tbsKeeper is the issuer's public key standing in for its signer.
type tbsKeeper struct {
	pub  crypto.PublicKey
	tbs  []byte
	opts crypto.SignerOpts
}

var _ crypto.MessageSigner = (*tbsKeeper)(nil)

func (k *tbsKeeper) Public() crypto.PublicKey { return k.pub }

// Sign is never called by a crypto/x509 that hands over the whole message.
func (k *tbsKeeper) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("ca: crypto/x509 did not hand over the TBSCertificate")
}

func (k *tbsKeeper) SignMessage(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	k.tbs, k.opts = slices.Clone(msg), opts
	return nil, errTBSKept
}

// buildTBS returns the TBSCertificate that parent's key signs to issue
// tmpl for pub, as x509.CreateCertificate builds it. A template that
// crypto/x509 refuses is ErrInvalid.
func buildTBS(tmpl, parent *x509.Certificate, pub crypto.PublicKey) (*tbsCertificate, error) {
	k := &tbsKeeper{pub: parent.PublicKey}
	_, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, k)
	switch {
	case err == nil:
		return nil, errors.New("ca: crypto/x509 made a certificate without a signer") // cannot happen
	case !errors.Is(err, errTBSKept):
		if k.tbs != nil {
			return nil, fmt.Errorf("ca: build TBSCertificate: %w", err)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	algID, err := tbsSignatureAlgorithm(k.tbs)
	if err != nil {
		return nil, err
	}
	return &tbsCertificate{der: k.tbs, algID: algID, opts: k.opts, pub: parent.PublicKey}, nil
}

// tbsSignatureAlgorithm returns the signature AlgorithmIdentifier of a DER
// TBSCertificate, which the certificate repeats outside it (RFC 5280,
// 4.1.1.2).
func tbsSignatureAlgorithm(tbs []byte) ([]byte, error) {
	s := cryptobyte.String(tbs)
	var body, alg cryptobyte.String
	if !s.ReadASN1(&body, cbasn1.SEQUENCE) || !s.Empty() ||
		!body.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!body.SkipASN1(cbasn1.INTEGER) ||
		!body.ReadASN1Element(&alg, cbasn1.SEQUENCE) {
		return nil, errors.New("ca: malformed TBSCertificate")
	}
	return alg, nil
}

// certificate is the DER certificate of t with signature sig.
func (t *tbsCertificate) certificate(sig []byte) ([]byte, error) {
	// Room for the whole certificate: the builder does not grow, nor copy.
	b := cryptobyte.NewBuilder(make([]byte, 0, len(t.der)+len(t.algID)+len(sig)+16))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(t.der)
		b.AddBytes(t.algID)
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}

// lintCertificate is t with a placeholder signature, for the lints only.
func (t *tbsCertificate) lintCertificate() ([]byte, error) {
	return t.certificate(lintSignature(t.pub))
}

// lintSignature is a well-formed signature value for a key like pub that
// verifies nothing. A certificate signed by a throwaway key (a lint
// issuer) carries a signature that is no more the issued one; none of the
// lints in use reads it (TestLintSignatureUnread).
func lintSignature(pub crypto.PublicKey) []byte {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		sig := make([]byte, pub.Size())
		sig[len(sig)-1] = 1
		return sig
	case ed25519.PublicKey:
		return make([]byte, ed25519.SignatureSize)
	case *ecdsa.PublicKey:
		// SEQUENCE { r INTEGER 1, s INTEGER 1 }
		return []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}
	}
	return []byte{0}
}

// sign has signer, whose public key must be the issuer's, sign t, and
// returns the certificate. The KMS checks every signature against the
// key's public key before it returns it (kms.KMS.Sign), as crypto/x509
// does in signTBS, so the issuer's key verifies the certificate.
func (t *tbsCertificate) sign(signer crypto.Signer) (*x509.Certificate, error) {
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(t.pub) {
		return nil, errors.New("ca: sign: the signer's key is not the issuer's")
	}
	sig, err := crypto.SignMessage(signer, rand.Reader, t.der, t.opts)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	der, err := t.certificate(sig)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	if !bytes.Equal(cert.RawTBSCertificate, t.der) {
		return nil, errors.New("ca: sign: the signed certificate differs from the linted one")
	}
	return cert, nil
}
