package stepca

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/provisioner"
)

// ProvisionerTable holds the ACME provisioners by name, through the
// barrier, so every node serves the same ones.
const ProvisionerTable = "stepca.acme_provisioners"

// Records of MetaTable about provisioners: a random value rewritten with
// every change (nodes compare it to the one they loaded), and the mark that
// the default provisioner was made once, so that deleting it lasts.
var (
	recProvGeneration = []byte("acme-provisioners-generation")
	recDefaultMade    = []byte("acme-default-provisioner-made")
)

// minLifetime is the shortest MaxLifetime: step-ca's shortest certificate.
const minLifetime = 5 * time.Minute

// ACMEProvisioner is a named ACME provisioner, served at
// /acme/<name>/directory. Its policy holds at new-order (names), at
// finalize (names again, key type, lifetime) and at every renewal through
// step's API of a certificate it issued.
type ACMEProvisioner struct {
	Name string `json:"name"`
	// AllowedNames and DeniedNames are ca.NamePolicy entries: exact names,
	// "*.name", ".name" (every name below), IP addresses and CIDRs. Deny
	// wins; an empty AllowedNames allows every name not denied.
	AllowedNames   []string `json:"allowed_names,omitempty"`
	DeniedNames    []string `json:"denied_names,omitempty"`
	AllowWildcards bool     `json:"allow_wildcards,omitempty"`
	// MaxLifetime caps the certificates' lifetime; 0 takes the CA's
	// maximum. Orders without notAfter get the CA's default lifetime or
	// MaxLifetime, whichever is shorter.
	MaxLifetime time.Duration `json:"max_lifetime,omitempty"`
	// KeyTypes are ca.KeyTypeNames; empty: all but ecdsa-p521.
	KeyTypes []string `json:"key_types,omitempty"`
	// RequireEAB makes new accounts need an external account binding made
	// for this provisioner, and refuses orders of accounts without one.
	RequireEAB bool `json:"require_eab,omitempty"`
	// Role, if set, names a REST role (ca.Role) whose names, key types and
	// maximum TTL apply too, as the role stands at each request.
	Role string `json:"role,omitempty"`
	// ID is step's ID of the provisioner, set when it is made: unique to
	// each provisioner made, so that the accounts and EAB keys of a deleted
	// provisioner never work for a new one of the same name. (The default
	// provisioner's is "acme/<name>", as before provisioners were stored.)
	ID string `json:"id,omitempty"`
}

// checkProvisionerName accepts 1 to 64 of [a-z0-9_.-], not starting with
// '.' or '-': the name is a path segment of ACME URLs.
func checkProvisionerName(name string) error {
	if !validName(name, 64) {
		return fmt.Errorf("%w: stepca: ACME provisioner name %q must be 1 to 64 of [a-z0-9_.-]", kms.ErrInvalid, name)
	}
	return nil
}

// validName reports whether name is 1 to n of [a-z0-9_.-], not starting
// with '.' or '-' (the names of roles and provisioners).
func validName(name string, n int) bool {
	ok := len(name) >= 1 && len(name) <= n && name[0] != '.' && name[0] != '-'
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
	}
	return ok
}

// normalize checks p and fills in its defaults; maxLifetime is the CA's.
func (p *ACMEProvisioner) normalize(maxLifetime time.Duration) error {
	if err := checkProvisionerName(p.Name); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: stepca: ACME provisioner %q: %s", kms.ErrInvalid, p.Name, fmt.Sprintf(format, args...))
	}
	np, err := ca.NamePolicy{Allowed: p.AllowedNames, Denied: p.DeniedNames, AllowWildcards: p.AllowWildcards}.Normalize()
	if err != nil {
		return bad("%v", err)
	}
	p.AllowedNames, p.DeniedNames = np.Allowed, np.Denied
	switch {
	case p.MaxLifetime == 0:
		p.MaxLifetime = maxLifetime
	case p.MaxLifetime < minLifetime || p.MaxLifetime > maxLifetime:
		return bad("max_lifetime %v must be %v to %v", p.MaxLifetime, minLifetime, maxLifetime)
	}
	if len(p.KeyTypes) == 0 {
		p.KeyTypes = slices.DeleteFunc(ca.KeyTypeNames(), func(t string) bool { return t == "ecdsa-p521" })
	}
	for _, t := range p.KeyTypes {
		if !slices.Contains(ca.KeyTypeNames(), t) {
			return bad("key type %q: want some of %v", t, ca.KeyTypeNames())
		}
	}
	if p.Role != "" && !validName(p.Role, 128) {
		return bad("role %q is not a role name", p.Role)
	}
	return nil
}

// stepID is the provisioner's ID in step-ca.
func (p ACMEProvisioner) stepID() string {
	if p.ID == "" {
		return "acme/" + p.Name
	}
	return p.ID
}

func (p ACMEProvisioner) names() ca.NamePolicy {
	return ca.NamePolicy{Allowed: p.AllowedNames, Denied: p.DeniedNames, AllowWildcards: p.AllowWildcards}
}

// provState is what a node serves: the provisioners it loaded, at a
// generation, and step's authority made with them.
type provState struct {
	gen   string
	hosts []string // the audiences' hosts (see audienceHosts)
	provs map[string]ACMEProvisioner
	jwks  map[string]JWKProvisioner
	auth  *authority.Authority
}

// state returns the provisioners and authority this node serves now.
func (s *Server) state() *provState { return s.cur.Load() }

// current returns the state, reloaded first if another node (or this one)
// changed the provisioners, or the hosts the CA is reached by changed: a
// stale read of one record (and of the hosts) per call, so a change is
// served by every node as soon as it applied it.
func (s *Server) current(ctx context.Context) (*provState, error) {
	gen, err := s.generation(ctx, raftstore.Stale())
	if err != nil {
		return nil, err
	}
	hosts, err := s.audienceHosts(ctx)
	if err != nil {
		return nil, err
	}
	if st := s.cur.Load(); st != nil && st.gen == gen && slices.Equal(st.hosts, hosts) {
		return st, nil
	}
	return s.reload(ctx, raftstore.Stale())
}

// reload loads the provisioners and makes a new authority with them.
// Requests in flight finish on the authority they started with.
func (s *Server) reload(ctx context.Context, opts ...raftstore.ReadOption) (*provState, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	gen, err := s.generation(ctx, opts...)
	if err != nil {
		return nil, err
	}
	hosts, err := s.audienceHosts(ctx)
	if err != nil {
		return nil, err
	}
	if st := s.cur.Load(); st != nil && st.gen == gen && slices.Equal(st.hosts, hosts) {
		return st, nil
	}
	provs, err := s.loadProvisioners(ctx, opts...)
	if err != nil {
		return nil, err
	}
	jwks, err := s.loadJWKs(ctx, opts...)
	if err != nil {
		return nil, err
	}
	a, err := s.newAuthority(provs, jwks, hosts)
	if err != nil {
		return nil, err
	}
	st := &provState{gen: gen, hosts: hosts, provs: map[string]ACMEProvisioner{}, jwks: map[string]JWKProvisioner{}, auth: a}
	for _, p := range provs {
		st.provs[p.Name] = p
	}
	for _, p := range jwks {
		st.jwks[p.Name] = p
	}
	s.cur.Store(st)
	return st, nil
}

func (s *Server) generation(ctx context.Context, opts ...raftstore.ReadOption) (string, error) {
	v, err := s.cfg.Storage.Get(ctx, MetaTable, recProvGeneration, opts...)
	if errors.Is(err, raftstore.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("stepca: provisioner generation: %w", err)
	}
	return string(v), nil
}

func (s *Server) loadProvisioners(ctx context.Context, opts ...raftstore.ReadOption) ([]ACMEProvisioner, error) {
	out := []ACMEProvisioner{}
	var after []byte
	for {
		page, err := s.cfg.Storage.List(ctx, ProvisionerTable, raftstore.ListOptions{After: after}, opts...)
		if err != nil {
			return nil, fmt.Errorf("stepca: list ACME provisioners: %w", err)
		}
		for _, kv := range page.Items {
			var p ACMEProvisioner
			if err := json.Unmarshal(kv.Value, &p); err != nil {
				return nil, fmt.Errorf("stepca: stored ACME provisioner %q: %w", kv.Key, err)
			}
			out = append(out, p)
		}
		if page.Next == nil {
			return out, nil
		}
		after = page.Next
	}
}

// stepProvisioners are step's provisioners for the ACME and JWK
// provisioners, and the configured JWK provisioner if there is one.
func (s *Server) stepProvisioners(provs []ACMEProvisioner, jwks []JWKProvisioner) provisioner.List {
	sort.Slice(provs, func(i, j int) bool { return provs[i].Name < provs[j].Name })
	var list provisioner.List
	for _, p := range provs {
		list = append(list, &provisioner.ACME{
			// Step checks an EAB against the ID field but makes it with
			// GetID, which falls back to "acme/<name>" when the field is
			// empty: set it.
			ID:         p.stepID(),
			Type:       provisioner.TypeACME.String(),
			Name:       p.Name,
			RequireEAB: p.RequireEAB,
			Challenges: []provisioner.ACMEChallenge{provisioner.HTTP_01, provisioner.DNS_01, provisioner.TLS_ALPN_01},
			Claims: &provisioner.Claims{
				DefaultTLSDur: &provisioner.Duration{Duration: min(s.cfg.DefaultCertDuration, p.MaxLifetime)},
			},
		})
	}
	for _, p := range jwks {
		list = append(list, s.stepJWK(p))
	}
	if s.jwk != nil {
		jwk := *s.jwk // Init fills in fields: each authority gets its own
		list = append(list, &jwk)
	}
	return list
}

// ensureDefault makes the default ACME provisioner (open: any name,
// wildcards allowed) once in the life of the cluster; deleting it lasts.
func (s *Server) ensureDefault(ctx context.Context) error {
	p := ACMEProvisioner{Name: s.cfg.ACMEProvisioner, AllowWildcards: true, RequireEAB: s.cfg.RequireEAB, ID: "acme/" + s.cfg.ACMEProvisioner}
	if err := p.normalize(s.cfg.MaxCertDuration); err != nil {
		return err
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := s.cfg.Storage.Get(ctx, MetaTable, recDefaultMade); err == nil {
		return nil
	} else if !errors.Is(err, raftstore.ErrNotFound) {
		return fmt.Errorf("stepca: default ACME provisioner: %w", err)
	}
	// Both compares must hold: made neither before nor by a node starting
	// at the same time.
	_, err = s.write(ctx,
		raftstore.Op{Kind: raftstore.OpCAS, Table: MetaTable, Key: recDefaultMade, Value: []byte("1")},
		raftstore.Op{Kind: raftstore.OpCAS, Table: ProvisionerTable, Key: []byte(p.Name), Value: raw})
	if err != nil {
		return fmt.Errorf("stepca: default ACME provisioner: %w", err)
	}
	return nil
}

// write applies ops with a new generation, and reloads this node when
// they applied. It reports whether they did.
func (s *Server) write(ctx context.Context, ops ...raftstore.Op) (bool, error) {
	g := make([]byte, 16)
	if _, err := rand.Read(g); err != nil {
		return false, err
	}
	ops = append(ops, raftstore.Op{Kind: raftstore.OpPut, Table: MetaTable, Key: recProvGeneration, Value: []byte(hex.EncodeToString(g))})
	res, err := s.cfg.Storage.Txn(ctx, ops)
	if err != nil {
		return false, err
	}
	if res.Succeeded {
		// A failed reload here is retried by the next request, which sees
		// the new generation; the change itself is stored.
		_, _ = s.reload(ctx)
	}
	return res.Succeeded, nil
}

// ACMEProvisioners returns the ACME provisioners, by name.
func (s *Server) ACMEProvisioners(ctx context.Context) ([]ACMEProvisioner, error) {
	provs, err := s.loadProvisioners(ctx)
	if err != nil {
		return nil, err
	}
	sort.Slice(provs, func(i, j int) bool { return provs[i].Name < provs[j].Name })
	return provs, nil
}

// ACMEProvisioner returns one ACME provisioner, or an error matching
// kms.ErrNotFound.
func (s *Server) ACMEProvisioner(ctx context.Context, name string) (ACMEProvisioner, error) {
	p, _, err := s.readProvisioner(ctx, name)
	return p, err
}

func (s *Server) readProvisioner(ctx context.Context, name string) (ACMEProvisioner, []byte, error) {
	if err := checkProvisionerName(name); err != nil {
		return ACMEProvisioner{}, nil, err
	}
	raw, err := s.cfg.Storage.Get(ctx, ProvisionerTable, []byte(name))
	if errors.Is(err, raftstore.ErrNotFound) {
		return ACMEProvisioner{}, nil, fmt.Errorf("%w: stepca: no ACME provisioner %q", kms.ErrNotFound, name)
	}
	if err != nil {
		return ACMEProvisioner{}, nil, fmt.Errorf("stepca: read ACME provisioner: %w", err)
	}
	var p ACMEProvisioner
	if err := json.Unmarshal(raw, &p); err != nil {
		return ACMEProvisioner{}, nil, fmt.Errorf("stepca: stored ACME provisioner %q: %w", name, err)
	}
	return p, raw, nil
}

// checked normalizes p and checks that its role exists.
func (s *Server) checked(ctx context.Context, p ACMEProvisioner) (ACMEProvisioner, []byte, error) {
	p.AllowedNames, p.DeniedNames, p.KeyTypes = slices.Clone(p.AllowedNames), slices.Clone(p.DeniedNames), slices.Clone(p.KeyTypes)
	if err := p.normalize(s.cfg.MaxCertDuration); err != nil {
		return p, nil, err
	}
	if p.Name == s.cfg.JWKProvisioner {
		return p, nil, fmt.Errorf("%w: stepca: %q names the step provisioner", kms.ErrConflict, p.Name)
	}
	if p.Role != "" {
		if s.cfg.Roles == nil {
			return p, nil, fmt.Errorf("%w: stepca: this CA has no roles", kms.ErrInvalid)
		}
		if _, err := s.cfg.Roles.ReadRole(ctx, p.Role); err != nil {
			if errors.Is(err, kms.ErrNotFound) {
				return p, nil, fmt.Errorf("%w: stepca: ACME provisioner %q: role %q does not exist", kms.ErrInvalid, p.Name, p.Role)
			}
			return p, nil, err
		}
	}
	raw, err := json.Marshal(p)
	return p, raw, err
}

// CreateACMEProvisioner stores a new ACME provisioner; one of that name
// existing is a conflict (kms.ErrConflict). It returns it as stored.
func (s *Server) CreateACMEProvisioner(ctx context.Context, p ACMEProvisioner) (ACMEProvisioner, error) {
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return ACMEProvisioner{}, err
	}
	p.ID = "acme/" + p.Name + "/" + hex.EncodeToString(id)
	p, raw, err := s.checked(ctx, p)
	if err != nil {
		return ACMEProvisioner{}, err
	}
	ok, err := s.write(ctx, raftstore.Op{Kind: raftstore.OpCAS, Table: ProvisionerTable, Key: []byte(p.Name), Value: raw},
		// and no JWK provisioner of that name (asserts absence, deletes nothing)
		raftstore.Op{Kind: raftstore.OpCAS, Table: JWKTable, Key: []byte(p.Name), Delete: true})
	switch {
	case err != nil:
		return ACMEProvisioner{}, fmt.Errorf("stepca: create ACME provisioner: %w", err)
	case !ok:
		return ACMEProvisioner{}, fmt.Errorf("%w: stepca: ACME provisioner %q exists", kms.ErrConflict, p.Name)
	}
	return p, nil
}

// UpdateACMEProvisioner replaces an existing ACME provisioner (its name
// picks it); an absent one is kms.ErrNotFound. Certificates it issued are
// renewed under the new policy.
func (s *Server) UpdateACMEProvisioner(ctx context.Context, p ACMEProvisioner) (ACMEProvisioner, error) {
	for range 8 {
		old, oldRaw, err := s.readProvisioner(ctx, p.Name)
		if err != nil {
			return ACMEProvisioner{}, err
		}
		p.ID = old.ID
		p, raw, err := s.checked(ctx, p)
		if err != nil {
			return ACMEProvisioner{}, err
		}
		ok, err := s.write(ctx, raftstore.Op{Kind: raftstore.OpCAS, Table: ProvisionerTable, Key: []byte(p.Name), Old: oldRaw, Value: raw})
		if err != nil {
			return ACMEProvisioner{}, fmt.Errorf("stepca: update ACME provisioner: %w", err)
		}
		if ok {
			return p, nil
		}
	}
	return ACMEProvisioner{}, fmt.Errorf("%w: stepca: ACME provisioner %q kept changing", kms.ErrConflict, p.Name)
}

// DeleteACMEProvisioner deletes an ACME provisioner and its EAB keys. Its
// accounts can no longer order, and its certificates can no longer be
// renewed; they stay valid until they expire or are revoked.
func (s *Server) DeleteACMEProvisioner(ctx context.Context, name string) error {
	p, err := s.ACMEProvisioner(ctx, name)
	if err != nil {
		return err
	}
	// The keys go first: if deleting the provisioner then fails, it stays
	// with fewer keys, never the other way round.
	id := p.stepID()
	keys, _, err := s.acmeDB.GetExternalAccountKeys(ctx, id, "", 0)
	if err != nil {
		return fmt.Errorf("stepca: EAB keys of %q: %w", name, err)
	}
	for _, k := range keys {
		if k.ID == "" {
			continue
		}
		if err := s.acmeDB.DeleteExternalAccountKey(ctx, id, k.ID); err != nil {
			return fmt.Errorf("stepca: delete an EAB key of %q: %w", name, err)
		}
	}
	return s.deleteProvisionerRecord(ctx, ProvisionerTable, name, "ACME provisioner")
}

// deleteProvisionerRecord deletes the record of provisioner name (a what)
// from table; an absent one is kms.ErrNotFound.
func (s *Server) deleteProvisionerRecord(ctx context.Context, table, name, what string) error {
	ok, err := s.write(ctx,
		raftstore.Op{Kind: raftstore.OpGet, Table: table, Key: []byte(name)},
		raftstore.Op{Kind: raftstore.OpDelete, Table: table, Key: []byte(name)})
	switch {
	case err != nil:
		return fmt.Errorf("stepca: delete %s: %w", what, err)
	case !ok:
		return fmt.Errorf("%w: stepca: no %s %q", kms.ErrNotFound, what, name)
	}
	return nil
}
