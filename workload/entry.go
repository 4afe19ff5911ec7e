package workload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// tableEntries holds registration entries (entry ID -> Entry), through the
// barrier.
const tableEntries = "workload.entries"

// Limits on an entry.
const (
	MaxSelectors      = 16
	maxSelectorLength = 512
	maxSPIFFEIDLength = 2048
)

// Entry is a registration entry: the workloads whose every selector holds
// get SPIFFEID, issued under Role.
type Entry struct {
	ID        string    `json:"id"`
	SPIFFEID  string    `json:"spiffe_id"`
	Selectors []string  `json:"selectors"` // canonical, sorted
	Role      string    `json:"role"`
	Created   time.Time `json:"created"`
}

// Selector is one condition on a caller: "unix:<type>:<value>".
type Selector struct {
	Type  string // uid, gid, user, group, path, sha256
	Value string
}

func (s Selector) String() string { return "unix:" + s.Type + ":" + s.Value }

// ParseSelector parses "unix:uid:1000", "unix:gid:1000",
// "unix:user:NAME", "unix:group:NAME", "unix:path:/ABS/PATH" or
// "unix:sha256:HEX" (of the executable), as SPIRE's unix workload attestor
// names them.
func ParseSelector(s string) (Selector, error) {
	bad := func(format string, args ...any) (Selector, error) {
		return Selector{}, fmt.Errorf("%w: selector %q: %s", ErrInvalid, truncate(s, 64), fmt.Sprintf(format, args...))
	}
	if len(s) > maxSelectorLength {
		return bad("over %d bytes", maxSelectorLength)
	}
	kind, rest, ok := strings.Cut(s, ":")
	if !ok || kind != "unix" {
		return bad("want unix:<type>:<value>")
	}
	typ, val, ok := strings.Cut(rest, ":")
	if !ok || val == "" {
		return bad("want unix:<type>:<value>")
	}
	for _, r := range val {
		if r < 0x20 || r == 0x7f {
			return bad("control characters are not allowed")
		}
	}
	switch typ {
	case "uid", "gid":
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil {
			return bad("%s must be a decimal number", typ)
		}
		val = strconv.FormatUint(n, 10)
	case "user", "group":
		if strings.ContainsAny(val, ": /") {
			return bad("%s must be a name", typ)
		}
	case "path":
		if !strings.HasPrefix(val, "/") || path.Clean(val) != val {
			return bad("path must be absolute and clean")
		}
	case "sha256":
		b, err := hex.DecodeString(val)
		if err != nil || len(b) != sha256.Size {
			return bad("sha256 must be 64 hexadecimal digits")
		}
		val = hex.EncodeToString(b)
	default:
		return bad("type %q: want uid, gid, user, group, path or sha256", typ)
	}
	return Selector{Type: typ, Value: val}, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// RoleChecker checks an identity against a CA role: *ca.CA.
type RoleChecker interface {
	CheckIssue(ctx context.Context, role string, ir ca.IssueRequest) error
}

// Registry keeps the registration entries.
type Registry struct {
	store kms.Storage
	roles RoleChecker
	now   func() time.Time
}

// NewRegistry creates the entries' table (safe at every start).
func NewRegistry(ctx context.Context, store kms.Storage, roles RoleChecker) (*Registry, error) {
	if store == nil || roles == nil {
		return nil, errors.New("workload: registry needs a store and a role checker")
	}
	if err := store.CreateTable(ctx, tableEntries); err != nil {
		return nil, fmt.Errorf("workload: create table: %w", err)
	}
	return &Registry{store: store, roles: roles, now: time.Now}, nil
}

// normalize checks e and puts it in canonical form, with its ID.
func (e *Entry) normalize() error {
	if len(e.SPIFFEID) > maxSPIFFEIDLength {
		return fmt.Errorf("%w: spiffe_id is over %d bytes", ErrInvalid, maxSPIFFEIDLength)
	}
	id, err := spiffeid.FromString(e.SPIFFEID)
	if err != nil {
		return fmt.Errorf("%w: spiffe_id: %v", ErrInvalid, err)
	}
	if id.Path() == "" {
		return fmt.Errorf("%w: spiffe_id must have a path: a workload cannot be its trust domain", ErrInvalid)
	}
	e.SPIFFEID = id.String()
	switch {
	case len(e.Selectors) == 0:
		return fmt.Errorf("%w: at least one selector is required", ErrInvalid)
	case len(e.Selectors) > MaxSelectors:
		return fmt.Errorf("%w: at most %d selectors", ErrInvalid, MaxSelectors)
	case e.Role == "":
		return fmt.Errorf("%w: role is required", ErrInvalid)
	}
	sels := make([]string, 0, len(e.Selectors))
	for _, s := range e.Selectors {
		sel, err := ParseSelector(s)
		if err != nil {
			return err
		}
		if !slices.Contains(sels, sel.String()) {
			sels = append(sels, sel.String())
		}
	}
	slices.Sort(sels)
	e.Selectors = sels
	sum := sha256.Sum256([]byte(e.SPIFFEID + "\n" + strings.Join(sels, "\n")))
	e.ID = hex.EncodeToString(sum[:16])
	return nil
}

// Create checks an entry (its SPIFFE ID must be allowed by its role) and
// stores it. The same SPIFFE ID with the same selectors is a conflict.
func (r *Registry) Create(ctx context.Context, e Entry) (Entry, error) {
	e.Selectors = slices.Clone(e.Selectors)
	if err := e.normalize(); err != nil {
		return Entry{}, err
	}
	if err := r.roles.CheckIssue(ctx, e.Role, ca.IssueRequest{URIs: []string{e.SPIFFEID}}); err != nil {
		return Entry{}, fmt.Errorf("role %q: %w", e.Role, err)
	}
	e.Created = r.now().UTC().Truncate(time.Second)
	raw, err := json.Marshal(e)
	if err != nil {
		return Entry{}, err
	}
	ok, _, err := r.store.CompareAndSwap(ctx, tableEntries, []byte(e.ID), nil, raw)
	if err != nil {
		return Entry{}, fmt.Errorf("create entry: %w", err)
	}
	if !ok {
		return Entry{}, fmt.Errorf("%w: an entry for %s with these selectors exists (id %s)", ErrConflict, e.SPIFFEID, e.ID)
	}
	return e, nil
}

func checkID(id string) error {
	if b, err := hex.DecodeString(id); err != nil || len(b) != 16 {
		return fmt.Errorf("%w: entry id must be 32 hexadecimal digits", ErrInvalid)
	}
	return nil
}

// Get returns an entry, or an error matching ErrNotFound.
func (r *Registry) Get(ctx context.Context, id string) (Entry, error) {
	if err := checkID(id); err != nil {
		return Entry{}, err
	}
	raw, err := r.store.Get(ctx, tableEntries, []byte(id))
	if errors.Is(err, raftstore.ErrNotFound) {
		return Entry{}, fmt.Errorf("%w: entry %s", ErrNotFound, id)
	}
	if err != nil {
		return Entry{}, err
	}
	var e Entry
	if err := json.Unmarshal(raw, &e); err != nil {
		return Entry{}, fmt.Errorf("workload: stored entry %s: %w", id, err)
	}
	return e, nil
}

// List returns every entry, ordered by ID.
func (r *Registry) List(ctx context.Context) ([]Entry, error) {
	out := []Entry{}
	o := raftstore.ListOptions{Limit: 256}
	for {
		page, err := r.store.List(ctx, tableEntries, o)
		if err != nil {
			return nil, err
		}
		for _, kv := range page.Items {
			var e Entry
			if err := json.Unmarshal(kv.Value, &e); err != nil {
				return nil, fmt.Errorf("workload: stored entry %s: %w", kv.Key, err)
			}
			out = append(out, e)
		}
		if page.Next == nil {
			return out, nil
		}
		o.After = page.Next
	}
}

// Delete removes an entry; SVIDs already issued for it stay valid until
// they expire (revoke them through the CA to end them sooner).
func (r *Registry) Delete(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	res, err := r.store.Txn(ctx, []raftstore.Op{
		{Kind: raftstore.OpGet, Table: tableEntries, Key: []byte(id)},
		{Kind: raftstore.OpDelete, Table: tableEntries, Key: []byte(id)},
	})
	if err != nil {
		return fmt.Errorf("delete entry: %w", err)
	}
	if !res.Succeeded {
		return fmt.Errorf("%w: entry %s", ErrNotFound, id)
	}
	return nil
}
