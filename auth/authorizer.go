package auth

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/custos-pki/custos/internal/names"
	"github.com/custos-pki/custos/raftstore"
)

// maxCachedACLs bounds the Authorizer's cache; when full it starts over.
const maxCachedACLs = 4096

// Authorizer decides what a set of policies allows on an API path.
//
// Matching follows Vault. A pattern is an exact path, a path ending in "*"
// (any suffix, slashes included) or a path with "+" segments (exactly one
// non-empty segment each). The policies' rules are merged: the capabilities
// of one pattern in several policies are united, and a "deny" among them
// makes the pattern deny. Of the merged patterns that match a path, the most
// precise decides (a later first wildcard, then no trailing "*", then fewer
// "+", then the longer pattern); if it denies, or nothing matches, nothing
// is allowed. "root" allows everything. Unknown policy names grant nothing.
//
// Compiled rule sets are cached per policy set and keyed on a policy version
// that every policy write replaces. Each check reads that version from this
// node's own state (a stale read, no network round trip), so a policy change
// made through any node is seen here as soon as it is applied here: at once
// on the node that made it, within the replication lag on the others. The
// API checks a request's token first, with a linearizable read that brings
// this node's state up to date, so for its requests a change applies at
// once on every node.
type Authorizer struct {
	s *Service

	mu      sync.Mutex
	valid   bool   // version holds a version read from storage
	version string // the stored policy version the cache is for
	acls    map[string]*acl
}

type acl struct {
	root  bool
	rules []Rule // merged by pattern, most precise first
}

func newAuthorizer(s *Service) *Authorizer {
	return &Authorizer{s: s, acls: map[string]*acl{}}
}

// invalidate drops the cache; the next check reloads it.
func (a *Authorizer) invalidate() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.valid = false
	clear(a.acls)
}

// Allowed reports whether policies grant every capability in c on path.
// A storage error (for example, a sealed barrier) is returned, and the
// caller must refuse the request.
func (a *Authorizer) Allowed(ctx context.Context, policies []string, path string, c Capability) (bool, error) {
	if c == 0 || c&CapDeny != 0 {
		return false, nil
	}
	have, err := a.Capabilities(ctx, policies, path)
	if err != nil {
		return false, err
	}
	return have&c == c, nil
}

// Capabilities returns what policies grant on path (never CapDeny: a
// denied path has no capabilities).
func (a *Authorizer) Capabilities(ctx context.Context, policies []string, path string) (Capability, error) {
	acl, _, err := a.acl(ctx, policies)
	if err != nil {
		return 0, err
	}
	return acl.capabilities(path), nil
}

// capabilities returns what the merged rules grant on path.
func (acl *acl) capabilities(path string) Capability {
	if acl.root {
		return capAll
	}
	for i := range acl.rules {
		r := &acl.rules[i]
		if r.pat.match(path) {
			if r.Capabilities&CapDeny != 0 {
				return 0
			}
			return r.Capabilities
		}
	}
	return 0
}

// staleRead is the read option raftstore.Stale(), made once: a variadic
// argument list of its own would be allocated by every call.
var staleRead = []raftstore.ReadOption{raftstore.Stale()}

// rootACL is the acl of every policy set that holds root.
var rootACL = &acl{root: true}

// normalized reports whether policies are as normalizePolicies leaves a
// token's (sorted, without duplicates) and all valid names other than
// root: the set acl would compute from them is themselves.
func normalized(policies []string) bool {
	for i, p := range policies {
		if p == PolicyRoot || !names.Valid(p, maxNameLen) || i > 0 && policies[i-1] >= p {
			return false
		}
	}
	return true
}

// policyVersion is the stored policy version a decision was made under:
// its bytes, or nil when no policy was ever written.
type policyVersion []byte

// acl returns the merged rules of a policy set, from the cache if it is
// current, and the policy version they hold for (nil for root, which
// reads no policy). No policy can have changed while the version stays.
func (a *Authorizer) acl(ctx context.Context, policies []string) (*acl, policyVersion, error) {
	names := policies
	if !normalized(policies) {
		names = make([]string, 0, len(policies))
		for _, p := range policies {
			if p == PolicyRoot {
				return rootACL, nil, nil
			}
			if validName("policy", p) == nil { // others cannot exist
				names = append(names, p)
			}
		}
		sort.Strings(names)
		names = slices.Compact(names)
	}
	// The key is built on the stack: a map lookup by string(bytes) does
	// not allocate; only a new entry copies it.
	var kb [256]byte
	key := kb[:0]
	for i, n := range names {
		if i > 0 {
			key = append(key, '\n')
		}
		key = append(key, n...)
	}

	v, found, err := a.s.get(ctx, tableMeta, policyVersionKey, staleRead...)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: read policy version: %w", err)
	}
	if found && v == nil {
		v = []byte{}
	}
	a.mu.Lock()
	if !a.valid || a.version != string(v) { // compared without a copy
		a.valid, a.version = true, string(v)
		clear(a.acls)
	}
	version := a.version
	cached := a.acls[string(key)]
	a.mu.Unlock()
	if cached != nil {
		return cached, v, nil
	}

	built, err := a.build(ctx, names)
	if err != nil {
		return nil, nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// Cache only if no change was seen meanwhile: the policies were read at
	// or after version, so they are current for it.
	if a.valid && a.version == version {
		if len(a.acls) >= maxCachedACLs {
			clear(a.acls)
		}
		a.acls[string(key)] = built
	}
	return built, v, nil
}

// build loads the named policies from this node's state and merges them.
func (a *Authorizer) build(ctx context.Context, names []string) (*acl, error) {
	merged := map[string]Rule{}
	for _, name := range names {
		p, err := a.s.loadPolicy(ctx, name, staleRead...)
		if err != nil {
			return nil, err
		}
		if p == nil {
			continue
		}
		for _, r := range p.Rules {
			m, ok := merged[r.Path]
			if !ok {
				m = r
			} else {
				m.Capabilities |= r.Capabilities
			}
			if m.Capabilities&CapDeny != 0 {
				m.Capabilities = CapDeny
			}
			merged[r.Path] = m
		}
	}
	out := &acl{rules: make([]Rule, 0, len(merged))}
	for _, r := range merged {
		out.rules = append(out.rules, r)
	}
	sort.Slice(out.rules, func(i, j int) bool { return out.rules[i].pat.morePrecise(&out.rules[j].pat) })
	return out, nil
}
