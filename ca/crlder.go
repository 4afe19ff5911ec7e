package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	encasn1 "encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// A CRL is encoded here rather than by x509.CreateRevocationList, which
// needs every entry as a parsed structure at once: a million entries cost
// hundreds of megabytes that way. crlEntries appends each entry in DER as
// the revocation index is read, so the memory a CRL takes is about its own
// size. The encoding is the one crypto/x509 produces (a test checks that
// the two are byte for byte the same): a v2 CRL with the authority key
// identifier and CRL number extensions, times in UTC, and a reasonCode
// entry extension for reasons other than unspecified.

var (
	oidAuthorityKeyID = encasn1.ObjectIdentifier{2, 5, 29, 35}
	oidCRLNumber      = encasn1.ObjectIdentifier{2, 5, 29, 20}
	oidReasonCode     = encasn1.ObjectIdentifier{2, 5, 29, 21}
)

// crlEntries is the DER of a revokedCertificates list, built one entry at
// a time.
type crlEntries struct {
	b *cryptobyte.Builder
	n int
}

func newCRLEntries() *crlEntries { return &crlEntries{b: cryptobyte.NewBuilder(nil)} }

// add appends one entry. serialHex is the inventory's form of the serial.
func (e *crlEntries) add(serialHex []byte, revokedAt time.Time, reason int) error {
	serial := make([]byte, hex.DecodedLen(len(serialHex)))
	if _, err := hex.Decode(serial, serialHex); err != nil || len(serial) == 0 || len(serial) > 20 || serial[0] == 0 {
		return fmt.Errorf("ca: revocation entry: bad serial %q", truncateBytes(serialHex, 48))
	}
	if revokedAt.IsZero() || !validReason(reason) {
		return fmt.Errorf("ca: revocation entry %s: bad time or reason", serialHex)
	}
	e.b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.INTEGER, func(b *cryptobyte.Builder) {
			if serial[0]&0x80 != 0 {
				b.AddUint8(0)
			}
			b.AddBytes(serial)
		})
		addTime(b, revokedAt)
		if reason != 0 { // RFC 5280 5.3.1: no reasonCode for unspecified
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidReasonCode)
					b.AddASN1(asn1.OCTET_STRING, func(b *cryptobyte.Builder) { b.AddASN1Enum(int64(reason)) })
				})
			})
		}
	})
	e.n++
	return nil
}

// addTime adds t as RFC 5280 wants it: UTCTime through 2049, then
// GeneralizedTime, in UTC, to the second.
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC().Truncate(time.Second)
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1UTCTime(t)
	} else {
		b.AddASN1GeneralizedTime(t)
	}
}

// crlSignature is how an issuer's key signs: the algorithm, its DER
// AlgorithmIdentifier and the hash, as crypto/x509 chooses them.
type crlSignature struct {
	alg   x509.SignatureAlgorithm
	algID []byte
	hash  crypto.Hash
}

func signatureFor(pub crypto.PublicKey) (crlSignature, error) {
	var oid encasn1.ObjectIdentifier
	var s crlSignature
	params := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			s.alg, s.hash, oid = x509.ECDSAWithSHA256, crypto.SHA256, encasn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
		case elliptic.P384():
			s.alg, s.hash, oid = x509.ECDSAWithSHA384, crypto.SHA384, encasn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
		case elliptic.P521():
			s.alg, s.hash, oid = x509.ECDSAWithSHA512, crypto.SHA512, encasn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
		default:
			return s, errors.New("ca: CRL: unsupported elliptic curve")
		}
	case *rsa.PublicKey:
		s.alg, s.hash, oid, params = x509.SHA256WithRSA, crypto.SHA256, encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, true
	default:
		return s, fmt.Errorf("ca: CRL: unsupported key type %T", pub)
	}
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if params {
			b.AddASN1NULL()
		}
	})
	var err error
	s.algID, err = b.Bytes()
	return s, err
}

// crlTemplate is what a CRL says besides its entries.
type crlTemplate struct {
	issuer                 *x509.Certificate
	number                 uint64
	thisUpdate, nextUpdate time.Time
}

// tbs encodes the TBSCertList with the entries.
func (t crlTemplate) tbs(sig crlSignature, entries *crlEntries) ([]byte, error) {
	if len(t.issuer.SubjectKeyId) == 0 {
		return nil, errors.New("ca: CRL: the issuer has no subject key identifier")
	}
	list, err := entries.b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("ca: CRL entries: %w", err)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, len(list)+len(t.issuer.RawSubject)+256))
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(1) // v2
		b.AddBytes(sig.algID)
		b.AddBytes(t.issuer.RawSubject)
		addTime(b, t.thisUpdate)
		addTime(b, t.nextUpdate)
		if entries.n > 0 {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(list) })
		}
		b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidAuthorityKeyID)
					b.AddASN1(asn1.OCTET_STRING, func(b *cryptobyte.Builder) {
						b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1(asn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(t.issuer.SubjectKeyId) })
						})
					})
				})
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidCRLNumber)
					b.AddASN1(asn1.OCTET_STRING, func(b *cryptobyte.Builder) { b.AddASN1Uint64(t.number) })
				})
			})
		})
	})
	return b.Bytes()
}

// signCRL signs the TBSCertList with signer, checks the signature with the
// issuer's public key, and returns the CertificateList.
func signCRL(tbs []byte, sig crlSignature, issuer *x509.Certificate, signer crypto.Signer) ([]byte, error) {
	h := sig.hash.New()
	h.Write(tbs)
	signature, err := signer.Sign(rand.Reader, h.Sum(nil), sig.hash)
	if err != nil {
		return nil, fmt.Errorf("ca: sign CRL: %w", err)
	}
	if err := issuer.CheckSignature(sig.alg, tbs, signature); err != nil {
		return nil, fmt.Errorf("ca: sign CRL: the signature does not verify: %w", err)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(signature)+64))
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(sig.algID)
		b.AddASN1BitString(signature)
	})
	return b.Bytes()
}

func truncateBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
