package stepca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

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
	return a, nil
}

func (a *authDB) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), a.timeout)
}

// StoreCertificateChain records a certificate issued by a provisioner (ACME
// finalize, step's /sign), then stores it as step does.
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
	if err := a.record(chain[0], source, role); err != nil {
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
