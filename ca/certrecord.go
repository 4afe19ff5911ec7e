package ca

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// certRecord is a Cert as stored at tableCerts/serial. Records are written
// in a binary form (recordV2) that keeps the DER as it is; records of the
// first binary form (recordV1) and records written as JSON, with the DER
// in base64, by earlier versions are still read, and a revocation rewrites
// them in the current form.
type certRecord struct {
	Serial    string    `json:"serial"`
	Issuer    string    `json:"issuer"`
	Source    string    `json:"source"`
	Role      string    `json:"role,omitempty"`
	NotAfter  time.Time `json:"not_after"`
	Recorded  time.Time `json:"recorded"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Reason    int       `json:"reason,omitempty"`
	DER       []byte    `json:"der"`
}

// recordV2 opens a binary record; recordV1 opened the form before it, and
// a JSON record opens with '{'.
//
//	0x02 issuer<1> source<1> role<1> not_after(8) recorded(8)
//	revoked(1) [revoked_at(8) reason(1)] der<3>
//	0x01 serial<1> issuer<1> ... (as 0x02)
//
// x<n> is x with an n-byte length before it; times are Unix seconds,
// signed, big-endian. Certificates hold no finer times, and the CA's clock
// is read to the second. A recordV2 holds no serial: it is the DER's, as
// it is the key's.
const (
	recordV1 = 0x01
	recordV2 = 0x02
)

// marshal encodes r in the binary form. r.Serial must be the DER's.
func (r *certRecord) marshal() ([]byte, error) {
	if serial, err := derSerial(r.DER); err != nil || serial != r.Serial {
		return nil, fmt.Errorf("ca: encode the record of %s: the certificate's serial is %s (%v)", r.Serial, serial, err)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 64+len(r.DER)))
	b.AddUint8(recordV2)
	for _, s := range []string{r.Issuer, r.Source, r.Role} {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
	}
	b.AddUint64(uint64(r.NotAfter.Unix()))
	b.AddUint64(uint64(r.Recorded.Unix()))
	if r.RevokedAt.IsZero() {
		b.AddUint8(0)
	} else {
		b.AddUint8(1)
		b.AddUint64(uint64(r.RevokedAt.Unix()))
		if r.Reason < 0 || r.Reason > 255 {
			b.SetError(fmt.Errorf("reason %d", r.Reason))
		}
		b.AddUint8(uint8(r.Reason))
	}
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(r.DER) })
	raw, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("ca: encode the record of %s: %w", r.Serial, err)
	}
	return raw, nil
}

// unmarshalRecord decodes a stored record of either form.
func unmarshalRecord(raw []byte) (certRecord, error) {
	var r certRecord
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &r); err != nil {
			return certRecord{}, fmt.Errorf("ca: stored certificate: %w", err)
		}
		return r, nil
	}
	s := cryptobyte.String(raw)
	var version, revoked uint8
	var serial, issuer, source, role, der cryptobyte.String
	var notAfter, recorded uint64
	ok := s.ReadUint8(&version) && (version == recordV2 || (version == recordV1 && s.ReadUint8LengthPrefixed(&serial))) &&
		s.ReadUint8LengthPrefixed(&issuer) &&
		s.ReadUint8LengthPrefixed(&source) && s.ReadUint8LengthPrefixed(&role) &&
		s.ReadUint64(&notAfter) && s.ReadUint64(&recorded) && s.ReadUint8(&revoked) && revoked <= 1
	if ok && revoked == 1 {
		var at uint64
		var reason uint8
		ok = s.ReadUint64(&at) && s.ReadUint8(&reason)
		r.RevokedAt, r.Reason = unixUTC(at), int(reason)
		ok = ok && !r.RevokedAt.IsZero()
	}
	if !ok || !s.ReadUint24LengthPrefixed(&der) || !s.Empty() {
		return certRecord{}, errors.New("ca: stored certificate: malformed record")
	}
	r.Serial, r.Issuer, r.Source, r.Role = string(serial), string(issuer), string(source), string(role)
	r.NotAfter, r.Recorded, r.DER = unixUTC(notAfter), unixUTC(recorded), der
	if version == recordV2 {
		var err error
		if r.Serial, err = derSerial(r.DER); err != nil {
			return certRecord{}, fmt.Errorf("ca: stored certificate: %w", err)
		}
	}
	return r, nil
}

// derSerial returns the serial of a DER certificate in the inventory's
// form, read without parsing the rest of it.
func derSerial(der []byte) (string, error) {
	s := cryptobyte.String(der)
	var cert, tbs cryptobyte.String
	var serial []byte
	if !s.ReadASN1(&cert, asn1.SEQUENCE) || !cert.ReadASN1(&tbs, asn1.SEQUENCE) ||
		!tbs.SkipOptionalASN1(asn1.Tag(0).Constructed().ContextSpecific()) ||
		!tbs.ReadASN1Integer(&serial) {
		return "", errors.New("no serial number in the certificate")
	}
	// ReadASN1Integer refuses negative numbers and strips the zero byte
	// before a positive one.
	n := new(big.Int).SetBytes(serial)
	if n.Sign() <= 0 {
		return "", errors.New("the certificate's serial number is not positive")
	}
	return serialString(n), nil
}

func unixUTC(s uint64) time.Time { return time.Unix(int64(s), 0).UTC() }
