package ca

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
)

// Status is the state of a certificate. Revoked wins over expired.
type Status string

// Statuses.
const (
	StatusValid   Status = "valid"
	StatusRevoked Status = "revoked"
	StatusExpired Status = "expired"
)

// Cert is one certificate of the inventory.
type Cert struct {
	Serial           string // lower-case hex
	Issuer           string // the ID of the intermediate that signed it
	Source           string // acme, rest, step
	Role             string
	Status           Status
	RevokedAt        time.Time
	RevocationReason int // RFC 5280 CRLReason
	Recorded         time.Time
	Certificate      *x509.Certificate
}

// revEntry is the value of a rev/ index entry: what a CRL needs.
type revEntry struct {
	RevokedAt time.Time `json:"revoked_at"`
	Reason    int       `json:"reason,omitempty"`
	NotAfter  time.Time `json:"not_after"`
}

func expKey(notAfter time.Time, serial string) []byte {
	return fmt.Appendf(nil, "exp/%016x/%s", notAfter.Unix(), serial)
}
func roleKey(role, serial string) []byte    { return []byte("role/" + role + "/" + serial) }
func revPrefix(issuerID string) []byte      { return []byte("rev/" + issuerID + "/") }
func revKey(issuerID, serial string) []byte { return append(revPrefix(issuerID), serial...) }

// serialString is the inventory's form of a serial number: lower-case hex
// of its big-endian bytes.
func serialString(n *big.Int) string { return hex.EncodeToString(n.Bytes()) }

// parseSerial accepts hex with or without colons and returns the
// inventory's form.
func parseSerial(s string) (string, error) {
	h := strings.ToLower(strings.TrimPrefix(strings.ReplaceAll(s, ":", ""), "0x"))
	n, ok := new(big.Int).SetString(h, 16)
	if !ok || len(h) > 40 || n.Sign() <= 0 || strings.HasPrefix(h, "-") || strings.HasPrefix(h, "+") {
		return "", fmt.Errorf("%w: serial %q must be a positive hexadecimal number of at most 20 bytes", ErrInvalid, s)
	}
	return serialString(n), nil
}

// Record adds a certificate issued by this CA to the inventory. source
// names the path that issued it (acme, rest, step: [a-z0-9_.-]) and role
// the role or provisioner, if any (printable ASCII without '/'). Recording the same certificate twice is a no-op;
// another certificate with a recorded serial is a conflict.
func (c *CA) Record(ctx context.Context, cert *x509.Certificate, source, role string) error {
	p, err := c.PrepareRecord(ctx, cert, source, role)
	if err != nil {
		return err
	}
	return p.Commit(ctx)
}

// PreparedRecord is the record of a certificate as the storage writes
// that Record makes, made by PrepareRecord and not written yet.
type PreparedRecord struct {
	ops    []raftstore.Op
	store  kms.Storage
	serial string
	der    []byte
}

// PrepareRecord checks cert, source and role as Record does and returns
// the writes that record it, without writing them: Commit writes them
// alone, exactly as Record would; or a caller commits them within a
// transaction of its own (Writes), which then fails whole if the serial is
// recorded already.
func (c *CA) PrepareRecord(ctx context.Context, cert *x509.Certificate, source, role string) (*PreparedRecord, error) {
	if cert == nil {
		return nil, fmt.Errorf("%w: no certificate", ErrInvalid)
	}
	if err := checkName("source", source); err != nil {
		return nil, err
	}
	if role != "" {
		if err := checkLabel("role", role); err != nil {
			return nil, err
		}
	}
	set, err := c.issuers(ctx)
	if err != nil {
		return nil, err
	}
	iss := c.signed.take(cert, set)
	if iss == nil {
		iss = set.issuerOf(cert)
	}
	if iss == nil {
		c.setCache(nil) // another node may have rotated: read the issuers again
		if set, err = c.issuers(ctx); err != nil {
			return nil, err
		}
		if iss = set.issuerOf(cert); iss == nil {
			return nil, fmt.Errorf("%w: the certificate was not issued by this CA", ErrInvalid)
		}
	}
	return c.prepareRecord(iss, cert, source, role)
}

func (c *CA) record(ctx context.Context, iss *issuer, cert *x509.Certificate, source, role string) error {
	p, err := c.prepareRecord(iss, cert, source, role)
	if err != nil {
		return err
	}
	return p.Commit(ctx)
}

// prepareRecord makes the writes of cert's record: the record, inserted
// only if absent, then its index entries.
func (c *CA) prepareRecord(iss *issuer, cert *x509.Certificate, source, role string) (*PreparedRecord, error) {
	serial := serialString(cert.SerialNumber)
	rec := certRecord{
		Serial: serial, Issuer: iss.id, Source: source, Role: role,
		NotAfter: cert.NotAfter.UTC(), Recorded: c.now(), DER: cert.Raw,
	}
	raw, err := rec.marshal()
	if err != nil {
		return nil, err
	}
	ops := []raftstore.Op{
		{Kind: raftstore.OpCAS, Table: tableCerts, Key: []byte(serial), Value: raw},
		{Kind: raftstore.OpPut, Table: tableIndex, Key: expKey(cert.NotAfter, serial), Value: []byte{}},
	}
	if role != "" {
		ops = append(ops, raftstore.Op{Kind: raftstore.OpPut, Table: tableIndex, Key: roleKey(role, serial), Value: []byte{}})
	}
	return &PreparedRecord{ops: ops, store: c.store, serial: serial, der: cert.Raw}, nil
}

// Writes returns the record's writes, the record's insert first. The
// caller must not change them.
func (p *PreparedRecord) Writes() []raftstore.Op { return p.ops }

// Commit writes the record alone, as Record does: a record of the same
// certificate already there is a no-op, one of another a conflict.
func (p *PreparedRecord) Commit(ctx context.Context) error {
	res, err := p.store.Txn(ctx, p.ops)
	if err != nil {
		return fmt.Errorf("ca: record %s: %w", p.serial, err)
	}
	if !res.Succeeded {
		if cur, err := unmarshalRecord(res.Values[0]); err == nil && bytes.Equal(cur.DER, p.der) {
			return nil
		}
		return fmt.Errorf("%w: serial %s is recorded for another certificate", ErrConflict, p.serial)
	}
	return nil
}

// checkLabel accepts 1 to 128 printable ASCII characters other than '/':
// the role or provisioner name of a recorded certificate.
func checkLabel(kind, s string) error {
	ok := len(s) >= 1 && len(s) <= 128
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] > ' ' && s[i] < 0x7f && s[i] != '/'
	}
	if !ok {
		return fmt.Errorf("%w: %s must be 1 to 128 printable ASCII characters other than '/'", ErrInvalid, kind)
	}
	return nil
}

// toCert turns a stored record into a Cert.
func (c *CA) toCert(raw []byte, now time.Time) (Cert, error) {
	rec, err := unmarshalRecord(raw)
	if err != nil {
		return Cert{}, err
	}
	cert, err := x509.ParseCertificate(rec.DER)
	if err != nil {
		return Cert{}, fmt.Errorf("ca: stored certificate %s: %w", rec.Serial, err)
	}
	out := Cert{
		Serial: rec.Serial, Issuer: rec.Issuer, Source: rec.Source, Role: rec.Role, Status: StatusValid,
		RevokedAt: rec.RevokedAt, RevocationReason: rec.Reason, Recorded: rec.Recorded, Certificate: cert,
	}
	switch {
	case !rec.RevokedAt.IsZero():
		out.Status = StatusRevoked
	case !now.Before(cert.NotAfter):
		out.Status = StatusExpired
	}
	return out, nil
}

// Get returns one certificate of the inventory by serial (hex, colons
// allowed).
func (c *CA) Get(ctx context.Context, serial string) (Cert, error) {
	s, err := parseSerial(serial)
	if err != nil {
		return Cert{}, err
	}
	cert, found, err := c.getCert(ctx, s)
	if err != nil {
		return Cert{}, err
	}
	if !found {
		return Cert{}, fmt.Errorf("%w: no certificate with serial %s", ErrNotFound, s)
	}
	return cert, nil
}

func (c *CA) getCert(ctx context.Context, serial string, opts ...raftstore.ReadOption) (Cert, bool, error) {
	raw, found, err := c.get(ctx, tableCerts, []byte(serial), opts...)
	if err != nil || !found {
		return Cert{}, false, err
	}
	cert, err := c.toCert(raw, c.now())
	return cert, err == nil, err
}

// Revoked reports whether cert, presented by a client, was revoked by this
// CA. A certificate that no issuer of this CA signed is not this CA's to
// judge: false. One that an issuer of this CA signed but that is not in the
// inventory is reported revoked, since every certificate is recorded before
// it is handed out. The inventory is read linearizably.
func (c *CA) Revoked(ctx context.Context, cert *x509.Certificate) (bool, error) {
	if cert == nil || cert.SerialNumber == nil || cert.SerialNumber.Sign() <= 0 {
		return false, fmt.Errorf("%w: no certificate", ErrInvalid)
	}
	set, err := c.issuers(ctx)
	if errors.Is(err, ErrNotInitialized) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	iss := set.issuerOf(cert)
	if iss == nil {
		c.setCache(nil) // an intermediate made elsewhere in the last CacheTTL
		if set, err = c.issuers(ctx); err != nil {
			return false, err
		}
		if iss = set.issuerOf(cert); iss == nil {
			return false, nil
		}
	}
	rec, found, err := c.getCert(ctx, serialString(cert.SerialNumber))
	if err != nil {
		return false, err
	}
	if !found || rec.Issuer != iss.id || !bytes.Equal(rec.Certificate.Raw, cert.Raw) {
		return true, nil
	}
	return rec.Status == StatusRevoked, nil
}

// Revocation reasons (RFC 5280, 5.3.1) that Revoke accepts: all but 7
// (unused) and 8 (removeFromCRL, for delta CRLs).
func validReason(r int) bool { return r >= 0 && r <= 10 && r != 7 && r != 8 }

// Revoke revokes a certificate with an RFC 5280 reason code. Revoking a
// revoked certificate fails with ErrAlreadyRevoked. In the same
// transaction the issuer's CRL is marked stale and its revocation epoch
// replaced, which tells every node's OCSP cache to look again; on the
// leader the CRL is remade before Revoke returns, elsewhere at the
// leader's next Maintain.
func (c *CA) Revoke(ctx context.Context, serial string, reason int) (Cert, error) {
	if !validReason(reason) {
		return Cert{}, fmt.Errorf("%w: reason %d: want an RFC 5280 reason code (0-6, 9, 10)", ErrInvalid, reason)
	}
	s, err := parseSerial(serial)
	if err != nil {
		return Cert{}, err
	}
	for range 8 {
		raw, found, err := c.get(ctx, tableCerts, []byte(s))
		if err != nil {
			return Cert{}, err
		}
		if !found {
			return Cert{}, fmt.Errorf("%w: no certificate with serial %s", ErrNotFound, s)
		}
		rec, err := unmarshalRecord(raw)
		if err != nil {
			return Cert{}, err
		}
		if !rec.RevokedAt.IsZero() {
			return Cert{}, fmt.Errorf("%w: serial %s", ErrAlreadyRevoked, s)
		}
		rec.RevokedAt, rec.Reason = c.now(), reason
		newRaw, err := rec.marshal()
		if err != nil {
			return Cert{}, err
		}
		entry, _ := json.Marshal(revEntry{RevokedAt: rec.RevokedAt, Reason: reason, NotAfter: rec.NotAfter})
		nonce := make([]byte, 16)
		_, _ = rand.Read(nonce)
		res, err := c.store.Txn(ctx, []raftstore.Op{
			{Kind: raftstore.OpCAS, Table: tableCerts, Key: []byte(s), Old: raw, Value: newRaw},
			{Kind: raftstore.OpPut, Table: tableIndex, Key: revKey(rec.Issuer, s), Value: entry},
			{Kind: raftstore.OpPut, Table: tableCRL, Key: dirtyKey(rec.Issuer), Value: nonce},
			{Kind: raftstore.OpPut, Table: tableCRL, Key: epochKey(rec.Issuer), Value: nonce},
		})
		if err != nil {
			return Cert{}, fmt.Errorf("revoke %s: %w", s, err)
		}
		if !res.Succeeded {
			continue
		}
		if c.cfg.IsLeader() {
			if _, err := c.refreshCRL(ctx, rec.Issuer); err != nil {
				c.log.Warn("ca: CRL not remade after a revocation; Maintain will retry", "issuer", rec.Issuer, "error", err)
			}
		}
		cert, err := c.toCert(newRaw, c.now())
		if err == nil && c.cfg.AfterRevoke != nil {
			if herr := c.cfg.AfterRevoke(ctx, cert); herr != nil {
				c.log.Warn("ca: after revocation", "serial", s, "error", herr)
			}
		}
		return cert, err
	}
	return Cert{}, fmt.Errorf("%w: serial %s kept changing", ErrConflict, s)
}

// Filter selects certificates for List. Zero fields select everything.
type Filter struct {
	Serial string
	// SAN matches a DNS name, IP address, URI or the common name: with '*'
	// as a glob where '*' matches any run of characters, else as a
	// case-insensitive substring.
	SAN    string
	Role   string
	Status Status
	// ExpiringWithin selects certificates not yet expired whose NotAfter is
	// within this duration from now.
	ExpiringWithin time.Duration
	// Limit caps the certificates of a page: 100 when 0, at most 1000.
	Limit int
	// After is the Next of the previous page.
	After string
}

// Page is one page of List. Next is "" on the last page.
type Page struct {
	Certs []Cert
	Next  string
}

// maxScan bounds the entries one List call looks at, so that a selective
// filter over a large inventory returns a partial page and a Next rather
// than scanning everything at once.
const maxScan = 10000

// List returns the certificates that match f, a page at a time. It walks
// the index that fits the filter best: role, expiry (ExpiringWithin or
// expired), revocations, or all certificates by serial.
func (c *CA) List(ctx context.Context, f Filter) (Page, error) {
	if err := f.check(); err != nil {
		return Page{}, err
	}
	now := c.now()
	page := Page{Certs: []Cert{}}
	if f.Serial != "" {
		cert, err := c.Get(ctx, f.Serial)
		if err != nil && !isNotFound(err) {
			return Page{}, err
		}
		if err == nil && f.match(cert, now) {
			page.Certs = append(page.Certs, cert)
		}
		return page, nil
	}
	table, prefix, start, stop := f.plan(now)
	after := start
	if f.After != "" {
		if !strings.HasPrefix(f.After, string(prefix)) {
			return Page{}, fmt.Errorf("%w: the cursor does not belong to this filter", ErrInvalid)
		}
		after = []byte(f.After)
	}
	scanned := 0
	err := c.listAll(ctx, table, prefix, after, table == tableIndex, func(kv raftstore.KV) (bool, error) {
		key := string(kv.Key)
		if stop != nil && stop(key) {
			return false, nil
		}
		scanned++
		var cert Cert
		var found bool
		var err error
		if table == tableCerts {
			cert, err = c.toCert(kv.Value, now)
			found = err == nil
		} else { // the index listing was linearizable: this node is current enough
			cert, found, err = c.getCert(ctx, key[strings.LastIndexByte(key, '/')+1:], raftstore.Stale())
		}
		if err != nil {
			return false, err
		}
		if found && f.match(cert, now) {
			page.Certs = append(page.Certs, cert)
		}
		if len(page.Certs) >= f.Limit || scanned >= maxScan {
			page.Next = key
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return Page{}, err
	}
	return page, nil
}

func (f *Filter) check() error {
	switch f.Status {
	case "", StatusValid, StatusRevoked, StatusExpired:
	default:
		return fmt.Errorf("%w: status %q: want valid, revoked or expired", ErrInvalid, f.Status)
	}
	if f.Role != "" {
		if err := checkLabel("role", f.Role); err != nil {
			return err
		}
	}
	switch {
	case f.ExpiringWithin < 0:
		return fmt.Errorf("%w: expiring must not be negative", ErrInvalid)
	case f.Limit < 0:
		return fmt.Errorf("%w: limit must not be negative", ErrInvalid)
	case f.Limit == 0:
		f.Limit = 100
	case f.Limit > 1000:
		f.Limit = 1000
	}
	f.SAN = strings.ToLower(f.SAN)
	return nil
}

// plan picks the table and key range to walk; stop, if set, reports the
// first key past the range.
func (f *Filter) plan(now time.Time) (table string, prefix, start []byte, stop func(string) bool) {
	expBefore := func(t time.Time) func(string) bool {
		limit := fmt.Sprintf("exp/%016x/", t.Unix())
		return func(k string) bool { return k[:min(len(k), len(limit))] > limit }
	}
	switch {
	case f.Role != "":
		return tableIndex, []byte("role/" + f.Role + "/"), nil, nil
	case f.ExpiringWithin > 0:
		return tableIndex, []byte("exp/"), fmt.Appendf(nil, "exp/%016x", now.Unix()), expBefore(now.Add(f.ExpiringWithin))
	case f.Status == StatusExpired:
		return tableIndex, []byte("exp/"), nil, expBefore(now)
	case f.Status == StatusRevoked:
		return tableIndex, []byte("rev/"), nil, nil
	}
	return tableCerts, nil, nil, nil
}

func (f *Filter) match(c Cert, now time.Time) bool {
	x := c.Certificate
	switch {
	case f.Role != "" && c.Role != f.Role,
		f.Status != "" && c.Status != f.Status,
		f.ExpiringWithin > 0 && (!now.Before(x.NotAfter) || x.NotAfter.After(now.Add(f.ExpiringWithin))):
		return false
	case f.SAN == "":
		return true
	}
	names := []string{strings.ToLower(x.Subject.CommonName)}
	names = append(names, x.DNSNames...)
	for _, ip := range x.IPAddresses {
		names = append(names, ip.String())
	}
	for _, u := range x.URIs {
		names = append(names, strings.ToLower(u.String()))
	}
	for _, n := range names {
		if n != "" && (strings.Contains(f.SAN, "*") && globMatch(f.SAN, n) || !strings.Contains(f.SAN, "*") && strings.Contains(n, f.SAN)) {
			return true
		}
	}
	return false
}

// globMatch matches s against a pattern where '*' matches any run of
// characters (dots and slashes too).
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(s, p)
		}
		j := strings.Index(s, p)
		if j < 0 {
			return false
		}
		s = s[j+len(p):]
	}
	return s == ""
}
