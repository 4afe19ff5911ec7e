package stepca

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"

	"github.com/custos-pki/custos/raftstore"
	"github.com/smallstep/certificates/acme"
	"golang.org/x/crypto/cryptobyte"
)

// CertificateReader is an optional ability of a Recorder: it returns a
// recorded certificate by serial, or an error wrapping ErrNotRecorded.
// With it, step's copies of the certificates it issues are not stored:
// an ACME certificate record holds its account, order and a reference to
// its issuing chain, and step's authority reads certificates (and the
// provisioner that issued them) from the inventory.
type CertificateReader interface {
	Certificate(ctx context.Context, serial *big.Int) (*x509.Certificate, error)
}

// ChainTable holds the issuing chains of ACME certificates, one record per
// distinct chain: its DER certificates concatenated, at the hex of the
// first 16 bytes of their SHA-256. Chains are few and are never deleted.
const ChainTable = "stepca.acme_chains"

// acmeCert is custos' ACME certificate record (step's acme_certs table).
// The certificate's ID is its serial in lower-case hex, so that step's
// serial index (acme_serial_certs_index) is not needed; the leaf comes
// from the Recorder (a CertificateReader) and the intermediates from
// ChainTable. It is stored in a binary form (acmeCertBinary); records
// stored as JSON by earlier versions (V 2) and records step wrote (JSON of
// PEM, with a serial index entry, V 0) are still read.
type acmeCert struct {
	V        int    `json:"v"` // acmeCertVersion
	Account  string `json:"a"`
	Order    string `json:"o"`
	NotAfter int64  `json:"n"`           // the leaf's, in Unix seconds: for CollectCertificates
	Chain    string `json:"c,omitempty"` // key in ChainTable; empty: no intermediates
	Leaf     []byte `json:"l,omitempty"` // DER, only when the Recorder is no CertificateReader
}

// acmeCertVersion is the V of custos' records, in either form.
const acmeCertVersion = 2

// acmeCertBinary opens the binary form of a record. A JSON record opens
// with '{'.
//
//	0x03 account<1> order<1> not_after(8) chain<1> leaf<3>
//
// x<n> is x after an n-byte length; not_after is Unix seconds, signed,
// big-endian; chain is the 16 bytes its ChainTable key is the hex of.
const acmeCertBinary = 0x03

// marshal encodes r in the binary form.
func (r *acmeCert) marshal() ([]byte, error) {
	chain, err := hex.DecodeString(r.Chain)
	if err != nil || (len(chain) != 0 && len(chain) != 16) {
		return nil, fmt.Errorf("stepca: certificate record: chain key %q", r.Chain)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 16+len(r.Account)+len(r.Order)+len(chain)+len(r.Leaf)))
	b.AddUint8(acmeCertBinary)
	for _, f := range [][]byte{[]byte(r.Account), []byte(r.Order)} {
		if len(f) > 255 {
			return nil, fmt.Errorf("stepca: certificate record: an ID of %d bytes", len(f))
		}
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(f) })
	}
	b.AddUint64(uint64(r.NotAfter))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(chain) })
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(r.Leaf) })
	return b.Bytes()
}

// unmarshalACMECert decodes a stored ACME certificate record of any form;
// step's own records decode with V 0.
func unmarshalACMECert(raw []byte) (acmeCert, error) {
	var r acmeCert
	if len(raw) == 0 || raw[0] != acmeCertBinary {
		err := json.Unmarshal(raw, &r)
		return r, err
	}
	s := cryptobyte.String(raw[1:])
	var account, order, chain, leaf cryptobyte.String
	var notAfter uint64
	if !s.ReadUint8LengthPrefixed(&account) || !s.ReadUint8LengthPrefixed(&order) || !s.ReadUint64(&notAfter) ||
		!s.ReadUint8LengthPrefixed(&chain) || (len(chain) != 0 && len(chain) != 16) ||
		!s.ReadUint24LengthPrefixed(&leaf) || !s.Empty() {
		return r, errors.New("stepca: certificate record: malformed")
	}
	r = acmeCert{V: acmeCertVersion, Account: string(account), Order: string(order), NotAfter: int64(notAfter)}
	if len(chain) > 0 {
		r.Chain = hex.EncodeToString(chain)
	}
	if len(leaf) > 0 {
		r.Leaf = leaf
	}
	return r, nil
}

// OrderedTables returns the ACME tables whose keys grow with time (the
// certificate records, keyed by serial), for raftstore.Config.
func OrderedTables() []string { return []string{TablePrefix + bucketCerts} }

// certID is the ID of the ACME certificate with this serial.
func certID(serial *big.Int) string { return hex.EncodeToString(serial.Bytes()) }

// chainKey is the ChainTable key of a chain's DER.
func chainKey(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:16])
}

// chainCache holds the chains known to be stored, parsed, by key.
type chainCache struct{ m sync.Map }

// certOps returns the writes that store cert (whose ID it sets): the
// record, inserted only if absent, and its chain if not stored yet.
func (d *acmeDB) certOps(ctx context.Context, cert *acme.Certificate) ([]raftstore.Op, error) {
	if cert.Leaf == nil || cert.Leaf.SerialNumber == nil || cert.Leaf.SerialNumber.Sign() <= 0 {
		return nil, acme.NewErrorISE("error saving certificate: no leaf")
	}
	cert.ID = certID(cert.Leaf.SerialNumber)
	rec := acmeCert{V: acmeCertVersion, Account: cert.AccountID, Order: cert.OrderID, NotAfter: cert.Leaf.NotAfter.Unix()}
	if d.certs == nil {
		rec.Leaf = cert.Leaf.Raw
	}
	var ops []raftstore.Op
	if len(cert.Intermediates) > 0 {
		var der []byte
		for _, c := range cert.Intermediates {
			der = append(der, c.Raw...)
		}
		rec.Chain = chainKey(der)
		if _, known := d.chains.m.Load(rec.Chain); !known {
			put, err := d.storeChain(ctx, rec.Chain, der)
			if err != nil {
				return nil, err
			}
			ops = append(ops, put...)
		}
	}
	raw, err := rec.marshal()
	if err != nil {
		return nil, acme.WrapErrorISE(err, "error marshaling certificate %s", cert.ID)
	}
	return append([]raftstore.Op{{Kind: raftstore.OpCAS, Table: TablePrefix + bucketCerts, Key: []byte(cert.ID), Value: raw}}, ops...), nil
}

// storeChain returns the write of a chain that is not stored yet, or
// none if it is (and then caches it).
func (d *acmeDB) storeChain(ctx context.Context, key string, der []byte) ([]raftstore.Op, error) {
	if _, err := d.chain(ctx, key); err == nil {
		return nil, nil
	} else if !errors.Is(err, raftstore.ErrNotFound) {
		return nil, err
	}
	// A put, not an insert: two finalisations may store the same chain at
	// once, and its value is the same.
	return []raftstore.Op{{Kind: raftstore.OpPut, Table: ChainTable, Key: []byte(key), Value: der}}, nil
}

// chain returns the stored chain at key.
func (d *acmeDB) chain(ctx context.Context, key string) ([]*x509.Certificate, error) {
	if v, ok := d.chains.m.Load(key); ok {
		return v.([]*x509.Certificate), nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.raw.timeout)
	defer cancel()
	der, err := d.raw.store.Get(ctx, ChainTable, []byte(key))
	if err != nil {
		return nil, fmt.Errorf("stepca: chain %s: %w", key, err)
	}
	if chainKey(der) != key {
		return nil, fmt.Errorf("stepca: chain %s: stored value does not match its key", key)
	}
	certs, err := x509.ParseCertificates(der)
	if err != nil {
		return nil, fmt.Errorf("stepca: chain %s: %w", key, err)
	}
	d.chains.m.Store(key, certs)
	return certs, nil
}

// CreateCertificate stores an ACME certificate with the inventory record
// parked when it was signed (authDB.StoreCertificateChain); in a finalize
// request they are written with the order that becomes valid
// (UpdateOrder), else at once. If they cannot be, the record is written
// alone.
func (d *acmeDB) CreateCertificate(ctx context.Context, cert *acme.Certificate) error {
	ops, err := d.certOps(ctx, cert)
	if err != nil {
		if cert.Leaf != nil && cert.Leaf.SerialNumber != nil {
			if rec, _ := d.parked.claim(ctx, cert.Leaf.SerialNumber); rec != nil {
				d.parked.writeAlone([]PreparedRecord{rec})
			}
		}
		return err
	}
	rec, err := d.parked.claim(ctx, cert.Leaf.SerialNumber)
	if err != nil {
		return acme.WrapErrorISE(err, "error saving certificate %s", cert.ID)
	}
	b := batchFor(ctx)
	alone := b == nil
	if alone {
		b = &writeBatch{}
	}
	if rec != nil {
		b.addRecord(rec)
	}
	b.add(ops...)
	if alone {
		return d.flush(ctx, b)
	}
	return nil
}

// GetCertificate returns the ACME certificate with this ID, leaf and
// intermediates as they were handed out.
func (d *acmeDB) GetCertificate(ctx context.Context, id string) (*acme.Certificate, error) {
	rec, found, err := d.readCert(ctx, id)
	switch {
	case err != nil:
		return nil, err
	case !found:
		return nil, acme.NewError(acme.ErrorMalformedType, "certificate %s not found", id)
	case rec.V != acmeCertVersion:
		return d.DB.GetCertificate(ctx, id) // step's record
	}
	return d.expand(ctx, id, rec)
}

// GetCertificateBySerial returns the ACME certificate with this serial
// (decimal, as step writes it).
func (d *acmeDB) GetCertificateBySerial(ctx context.Context, serial string) (*acme.Certificate, error) {
	n, ok := new(big.Int).SetString(serial, 10)
	if ok && n.Sign() > 0 {
		id := certID(n)
		rec, found, err := d.readCert(ctx, id)
		if err != nil {
			return nil, err
		}
		if found && rec.V == acmeCertVersion {
			return d.expand(ctx, id, rec)
		}
	}
	return d.DB.GetCertificateBySerial(ctx, serial) // step's serial index
}

func (d *acmeDB) readCert(ctx context.Context, id string) (acmeCert, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, d.raw.timeout)
	defer cancel()
	raw, err := d.raw.store.Get(ctx, TablePrefix+bucketCerts, []byte(id))
	if errors.Is(err, raftstore.ErrNotFound) {
		return acmeCert{}, false, nil
	}
	if err != nil {
		return acmeCert{}, false, acme.WrapErrorISE(err, "error loading certificate %s", id)
	}
	rec, err := unmarshalACMECert(raw)
	if err != nil {
		return rec, false, acme.WrapErrorISE(err, "error unmarshaling certificate %s", id)
	}
	return rec, true, nil
}

// expand makes the acme.Certificate of a record of custos.
func (d *acmeDB) expand(ctx context.Context, id string, rec acmeCert) (*acme.Certificate, error) {
	serial, ok := new(big.Int).SetString(id, 16)
	if !ok {
		return nil, acme.NewErrorISE("certificate %s: ID is not a serial", id)
	}
	var leaf *x509.Certificate
	var err error
	switch {
	case rec.Leaf != nil:
		leaf, err = x509.ParseCertificate(rec.Leaf)
	case d.certs != nil:
		leaf, err = d.certs.Certificate(ctx, serial)
		if errors.Is(err, ErrNotRecorded) {
			return nil, acme.NewError(acme.ErrorMalformedType, "certificate %s not found", id)
		}
	default:
		err = errors.New("no leaf stored and no inventory to read it from")
	}
	if err != nil {
		return nil, acme.WrapErrorISE(err, "error loading certificate %s", id)
	}
	if leaf.SerialNumber.Cmp(serial) != 0 {
		return nil, acme.NewErrorISE("certificate %s: the leaf has serial %s", id, leaf.SerialNumber)
	}
	out := &acme.Certificate{ID: id, AccountID: rec.Account, OrderID: rec.Order, Leaf: leaf, Intermediates: []*x509.Certificate{}}
	if rec.Chain != "" {
		chain, err := d.chain(ctx, rec.Chain)
		if err != nil {
			return nil, acme.WrapErrorISE(err, "error loading certificate %s", id)
		}
		out.Intermediates = slices.Clone(chain)
	}
	return out, nil
}
