package stepca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"github.com/custos-pki/custos/raftstore"
	"github.com/smallstep/certificates/authority/provisioner"
	"github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql/database"
)

// authTables are the tables of step's db package (db.New creates them, but
// custos gives step its database through authority.WithDatabase, and the
// names are unexported there).
var authTables = []string{
	"x509_certs", "x509_certs_data", "revoked_x509_certs", "x509_crl",
	"revoked_ssh_certs", "used_ott", "ssh_certs", "ssh_hosts", "ssh_users",
	"ssh_host_principals",
}

// authDB is step's authority database with the Recorder told of every
// certificate stored and every revocation, and asked about revocations.
// When the Recorder is a CertificateReader and an OriginTeller (custos'
// inventory), step's copies of the certificates (x509_certs) and of their
// provisioners (x509_certs_data) are not written: step reads them only to
// revoke (the certificate's expiry, for its CRL) and to find the
// provisioner of a certificate being renewed or revoked over mTLS, and
// both are answered from the inventory. Records step wrote are still read.
type authDB struct {
	*db.DB
	rec     Recorder
	certs   CertificateReader // rec, if it reads certificates and tells origins
	origins OriginTeller
	parked  *parkedRecords // the records of ACME certificates, if rec is a RecordPreparer
	timeout time.Duration
	// provisioner returns step's data of the provisioner with this name,
	// or nil.
	provisioner func(name string) *db.ProvisionerData
	// renewCheck decides a renewal again when it is stored, whatever path
	// it took (the Server checks it before signing too).
	renewCheck func(ctx context.Context, old *x509.Certificate, pub crypto.PublicKey) error
}

// Step's authority stores a certificate through the first of these it finds.
var (
	_ db.AuthDB = (*authDB)(nil)
	_ interface {
		StoreCertificateChain(provisioner.Interface, ...*x509.Certificate) error
		StoreRenewedCertificate(*x509.Certificate, ...*x509.Certificate) error
	} = (*authDB)(nil)
)

func newAuthDB(d *DB, rec Recorder, timeout time.Duration) (*authDB, error) {
	for _, t := range authTables {
		if err := d.CreateTable([]byte(t)); err != nil {
			return nil, err
		}
	}
	a := &authDB{DB: &db.DB{DB: d}, rec: rec, timeout: timeout}
	cr, ok1 := rec.(CertificateReader)
	ot, ok2 := rec.(OriginTeller)
	if ok1 && ok2 {
		a.certs, a.origins = cr, ot
	}
	if rp, ok := rec.(RecordPreparer); ok {
		a.parked = newParkedRecords(rp, timeout)
	}
	return a, nil
}

func (a *authDB) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), a.timeout)
}

// StoreCertificateChain records a certificate issued by a provisioner (ACME
// finalize, step's /sign), then stores it as step does. The record of an
// ACME certificate, when the Recorder is a RecordPreparer, is parked for
// the finalisation to write with the certificate and the valid order
// (acmeDB.CreateCertificate): an ACME provisioner signs only in a
// finalisation, which stores the certificate right after, in the same
// goroutine.
func (a *authDB) StoreCertificateChain(p provisioner.Interface, chain ...*x509.Certificate) error {
	if len(chain) == 0 {
		return fmt.Errorf("stepca: store certificate: empty chain")
	}
	source, role := SourceStep, ""
	if p != nil {
		role = p.GetName()
		if p.GetType() == provisioner.TypeACME {
			source = SourceACME
		}
	}
	var err error
	if source == SourceACME && a.parked != nil {
		err = a.parked.prepare(chain[0], source, role)
	} else {
		err = a.record(chain[0], source, role)
	}
	if err != nil {
		return err
	}
	if a.certs != nil {
		return nil
	}
	return a.DB.StoreCertificateChain(p, chain...)
}

// StoreRenewedCertificate records a renewal or rekey (step's /renew and
// /rekey), under the source and role of the certificate renewed as the
// Recorder knows them (else under its step provisioner), once the renewal
// passed the policy that issued the old certificate.
func (a *authDB) StoreRenewedCertificate(old *x509.Certificate, chain ...*x509.Certificate) error {
	if len(chain) == 0 {
		return fmt.Errorf("stepca: store certificate: empty chain")
	}
	ctx, cancel := a.ctx()
	defer cancel()
	if a.renewCheck != nil {
		if err := a.renewCheck(ctx, old, chain[0].PublicKey); err != nil {
			return err
		}
	}
	source, role := SourceStep, ""
	if data, err := a.GetCertificateData(old.SerialNumber.String()); err == nil && data.Provisioner != nil {
		role = data.Provisioner.Name
	}
	if ot, ok := a.rec.(OriginTeller); ok {
		o, err := ot.Origin(ctx, old.SerialNumber)
		if err != nil {
			return fmt.Errorf("stepca: origin of %s: %w", old.SerialNumber, err)
		}
		source, role = o.Source, o.Role
	}
	if err := a.record(chain[0], source, role); err != nil {
		return err
	}
	if a.certs != nil {
		return nil
	}
	return a.DB.StoreRenewedCertificate(old, chain...)
}

// StoreCertificate is step's fallback path; it records with no provisioner.
func (a *authDB) StoreCertificate(crt *x509.Certificate) error {
	if err := a.record(crt, SourceStep, ""); err != nil {
		return err
	}
	if a.certs != nil {
		return nil
	}
	return a.DB.StoreCertificate(crt)
}

// GetCertificate returns the certificate with this serial (decimal): from
// the inventory, else from step's copy.
func (a *authDB) GetCertificate(serial string) (*x509.Certificate, error) {
	if a.certs == nil {
		return a.DB.GetCertificate(serial)
	}
	n, err := stepSerial(serial)
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.ctx()
	defer cancel()
	c, err := a.certs.Certificate(ctx, n)
	if errors.Is(err, ErrNotRecorded) {
		return a.DB.GetCertificate(serial)
	}
	if err != nil {
		return nil, fmt.Errorf("stepca: certificate %s: %w", serial, err)
	}
	return c, nil
}

// GetCertificateData returns the provisioner that issued the certificate
// with this serial (decimal): from step's record if it wrote one, else
// the provisioner of the inventory's origin, as it is now. A certificate
// of custos' REST API has none.
func (a *authDB) GetCertificateData(serial string) (*db.CertificateData, error) {
	data, err := a.DB.GetCertificateData(serial)
	if a.origins == nil || !errors.Is(err, database.ErrNotFound) {
		return data, err
	}
	n, perr := stepSerial(serial)
	if perr != nil {
		return nil, perr
	}
	ctx, cancel := a.ctx()
	defer cancel()
	o, oerr := a.origins.Origin(ctx, n)
	if errors.Is(oerr, ErrNotRecorded) {
		return nil, err
	}
	if oerr != nil {
		return nil, fmt.Errorf("stepca: origin of %s: %w", serial, oerr)
	}
	data = &db.CertificateData{}
	if o.Source != SourceREST && o.Role != "" && a.provisioner != nil {
		data.Provisioner = a.provisioner(o.Role)
	}
	return data, nil
}

func (a *authDB) record(crt *x509.Certificate, source, role string) error {
	ctx, cancel := a.ctx()
	defer cancel()
	if err := a.rec.Record(ctx, crt, source, role); err != nil {
		return fmt.Errorf("stepca: record certificate %s: %w", crt.SerialNumber, err)
	}
	return nil
}

// Revoke stores a revocation as step does and tells the Recorder, if it
// records revocations.
func (a *authDB) Revoke(rci *db.RevokedCertificateInfo) error {
	if err := a.DB.Revoke(rci); err != nil {
		return err
	}
	rr, ok := a.rec.(RevocationRecorder)
	if !ok {
		return nil
	}
	n, err := stepSerial(rci.Serial)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx()
	defer cancel()
	if err := rr.RecordRevocation(ctx, n, rci.ReasonCode, rci.Reason); err != nil {
		return fmt.Errorf("stepca: record revocation of %s: %w", rci.Serial, err)
	}
	return nil
}

// IsRevoked reports a certificate revoked in step's list or, if the
// Recorder checks revocations, in custos' inventory.
func (a *authDB) IsRevoked(serial string) (bool, error) {
	if revoked, err := a.DB.IsRevoked(serial); err != nil || revoked {
		return revoked, err
	}
	rc, ok := a.rec.(RevocationChecker)
	if !ok {
		return false, nil
	}
	n, err := stepSerial(serial)
	if err != nil {
		return false, err
	}
	ctx, cancel := a.ctx()
	defer cancel()
	return rc.IsRevoked(ctx, n)
}

// stepSerial parses a serial number as step writes it: in decimal.
func stepSerial(s string) (*big.Int, error) {
	n, ok := new(big.Int).SetString(s, 10)
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("stepca: serial %q is not a positive decimal number", s)
	}
	return n, nil
}

// provisionerData is step's data of the ACME or JWK provisioner with this
// name, as this node serves it now, or nil.
func (s *Server) provisionerData(name string) *db.ProvisionerData {
	st := s.state()
	if st == nil {
		return nil
	}
	if p, ok := st.provs[name]; ok {
		return &db.ProvisionerData{ID: p.stepID(), Name: p.Name, Type: provisioner.TypeACME.String()}
	}
	var jwk *provisioner.JWK
	if p, ok := st.jwks[name]; ok {
		jwk = s.stepJWK(p)
	} else if s.jwk != nil && s.jwk.Name == name {
		jwk = s.jwk
	}
	if jwk == nil {
		return nil
	}
	return &db.ProvisionerData{ID: jwk.GetID(), Name: jwk.Name, Type: provisioner.TypeJWK.String()}
}

// RecordPreparer is an optional ability of a Recorder (custos' inventory
// has it): PrepareRecord checks a certificate as Record does and returns
// its record as writes, not written yet. The record of an ACME certificate
// is then written in the finalisation's transaction, with the ACME
// certificate and the valid order: one Raft entry, not two.
type RecordPreparer interface {
	PrepareRecord(ctx context.Context, cert *x509.Certificate, source, role string) (PreparedRecord, error)
}

// PreparedRecord is a certificate's record made by a RecordPreparer.
type PreparedRecord interface {
	// Writes are the record's writes, to commit in one transaction with
	// others; the caller does not change them. The transaction fails if the
	// serial is recorded already.
	Writes() []raftstore.Op
	// Commit writes the record alone, exactly as Record would.
	Commit(ctx context.Context) error
}

// maxParked bounds the records parked at once; past it, a certificate is
// recorded at once, in a transaction of its own.
const maxParked = 4096

// parkedRecords holds the records of ACME certificates between their
// signature and their finalisation's write, by serial (hex). Nothing
// signed goes unrecorded: a record that no finalisation claims within
// claimWithin is written alone, and so is one whose finalisation fails to
// write it. A record that cannot be written alone, even after parkedTries
// tries, stays as a mark that fails its finalisation if it ever comes.
type parkedRecords struct {
	rec         RecordPreparer
	timeout     time.Duration // of each storage call
	claimWithin time.Duration
	max         int // maxParked
	log         *slog.Logger

	mu sync.Mutex
	m  map[string]*parkedRecord
}

type parkedRecord struct {
	rec     PreparedRecord // nil: written, or given up on (failed)
	timer   *time.Timer
	writing chan struct{} // closed when the timer's write ends; nil when none runs
	failed  bool          // the timer could not write it: the finalisation must fail
	tries   int
}

// parkedTries is how often an unclaimed record is tried alone before it
// is given up on (and its finalisation, if it ever comes, fails).
const parkedTries = 5

func newParkedRecords(rec RecordPreparer, timeout time.Duration) *parkedRecords {
	return &parkedRecords{rec: rec, timeout: timeout, claimWithin: timeout, max: maxParked, log: slog.Default(), m: map[string]*parkedRecord{}}
}

// prepare makes cert's record and parks it, or writes it at once when
// too many are parked.
func (s *parkedRecords) prepare(cert *x509.Certificate, source, role string) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	p, err := s.rec.PrepareRecord(ctx, cert, source, role)
	if err == nil && !s.park(cert.SerialNumber, p) {
		err = p.Commit(ctx)
	}
	if err != nil {
		return fmt.Errorf("stepca: record certificate %s: %w", cert.SerialNumber, err)
	}
	return nil
}

// park holds p for the finalisation of the certificate with this serial;
// false if too many are parked.
func (s *parkedRecords) park(serial *big.Int, p PreparedRecord) bool {
	key := certID(serial)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= s.max || s.m[key] != nil {
		return false
	}
	e := &parkedRecord{rec: p}
	e.timer = time.AfterFunc(s.claimWithin, func() { s.unclaimed(key, e) })
	s.m[key] = e
	return true
}

// unclaimed writes a record that no finalisation claimed in time; one it
// cannot write stays parked (a finalisation may still claim it) and is
// tried again, up to parkedTries times.
func (s *parkedRecords) unclaimed(key string, e *parkedRecord) {
	s.mu.Lock()
	if s.m[key] != e || e.rec == nil || e.writing != nil {
		s.mu.Unlock()
		return
	}
	done := make(chan struct{})
	e.writing = done
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	err := e.rec.Commit(ctx)
	cancel()

	s.mu.Lock()
	defer s.mu.Unlock()
	e.writing = nil
	close(done)
	e.tries++
	switch {
	case err == nil:
		delete(s.m, key)
	case e.tries < parkedTries:
		s.log.Error("stepca: a signed ACME certificate was not claimed by its finalisation, and writing its record failed; retrying", "serial", key, "error", err)
		e.timer = time.AfterFunc(s.claimWithin, func() { s.unclaimed(key, e) })
	default:
		s.log.Error("stepca: a signed ACME certificate could not be recorded; its finalisation will fail", "serial", key, "error", err)
		e.rec, e.failed = nil, true
	}
}

// claim takes the parked record of the certificate with this serial: nil
// if none is parked (the Recorder prepares none, too many were parked, or
// it was written alone). A record being written alone is waited for. It
// fails if the record could not be written alone: the certificate must
// not be handed out.
func (s *parkedRecords) claim(ctx context.Context, serial *big.Int) (PreparedRecord, error) {
	if s == nil {
		return nil, nil
	}
	key := certID(serial)
	s.mu.Lock()
	for {
		e := s.m[key]
		switch {
		case e == nil:
			s.mu.Unlock()
			return nil, nil
		case e.writing != nil:
			done := e.writing
			s.mu.Unlock()
			select {
			case <-done:
			case <-ctx.Done():
				return nil, fmt.Errorf("stepca: record certificate %s: %w", key, ctx.Err())
			}
			s.mu.Lock()
			continue
		}
		delete(s.m, key)
		t := e.timer
		s.mu.Unlock()
		t.Stop()
		if e.failed {
			return nil, fmt.Errorf("stepca: certificate %s was signed but could not be recorded", key)
		}
		return e.rec, nil
	}
}

// writeAlone writes records that a finalisation claimed but did not
// write, each in a transaction of its own, so that the certificate is
// recorded though it is not handed out. It returns no error: the
// finalisation fails anyway; a failure is logged.
func (s *parkedRecords) writeAlone(recs []PreparedRecord) {
	for _, p := range recs {
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		err := p.Commit(ctx)
		cancel()
		if err != nil {
			s.log.Error("stepca: a signed ACME certificate could not be recorded after its finalisation failed", "error", err)
		}
	}
}
