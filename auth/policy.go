package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/custos-pki/custos/internal/names"
	"github.com/custos-pki/custos/raftstore"
)

// Built-in policy names.
const (
	// PolicyRoot allows everything. It has no stored document.
	PolicyRoot = "root"
	// PolicyDefault is attached to every token but root tokens. Unless an
	// operator overwrites it, it lets a token look up, renew and revoke
	// itself, at the paths below.
	PolicyDefault = "default"
)

// Paths the built-in default policy grants, relative to the API's /v1/.
const (
	PathLookupSelf = "auth/token/lookup-self"
	PathRenewSelf  = "auth/token/renew-self"
	PathRevokeSelf = "auth/token/revoke-self"
)

const (
	maxPolicySize  = 64 << 10
	maxPolicyRules = 1024
	maxNameLen     = 128
)

var (
	rootDocument    = []byte(`{"path":{"*":{"capabilities":["create","read","update","delete","list","sudo"]}}}`)
	defaultDocument = []byte(`{"path":{` +
		`"` + PathLookupSelf + `":{"capabilities":["read"]},` +
		`"` + PathRenewSelf + `":{"capabilities":["update"]},` +
		`"` + PathRevokeSelf + `":{"capabilities":["update"]}}}`)
)

// policyVersionKey holds a random value replaced whenever any policy
// changes; Authorizer caches are keyed on it.
var policyVersionKey = []byte("policy-version")

// validName checks a policy or role name.
func validName(kind, name string) error {
	if !names.Valid(name, maxNameLen) {
		return fmt.Errorf("%w: %s name %q: want 1 to %d characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit",
			ErrInvalid, kind, truncate(name, 32), maxNameLen)
	}
	return nil
}

// Rule grants (or, with CapDeny, refuses) capabilities on the paths a
// pattern matches.
type Rule struct {
	Path         string
	Capabilities Capability
	pat          pattern
}

// Policy is a named, parsed policy document.
type Policy struct {
	Name string
	// Document is the JSON as written.
	Document []byte
	// Rules in the order of the document.
	Rules []Rule
}

// ParsePolicy parses and validates a policy document of the form
//
//	{"path": {"secret/data/app/*": {"capabilities": ["read", "list"]}}}
//
// Unknown fields, duplicate keys, trailing data, unknown capabilities and
// bad path patterns are errors wrapping ErrInvalid.
func ParsePolicy(name string, doc []byte) (*Policy, error) {
	if err := validName("policy", name); err != nil {
		return nil, err
	}
	if len(doc) > maxPolicySize {
		return nil, fmt.Errorf("%w: policy %q: document larger than %d bytes", ErrInvalid, name, maxPolicySize)
	}
	p := &Policy{Name: name, Document: bytes.Clone(doc)}
	if err := parseDocument(bytes.NewReader(doc), p); err != nil {
		return nil, fmt.Errorf("%w: policy %q: %v", ErrInvalid, name, err)
	}
	return p, nil
}

// parseDocument walks the document token by token so that a duplicate key,
// which encoding/json would silently resolve, is an error.
func parseDocument(r io.Reader, p *Policy) error {
	dec := json.NewDecoder(r)
	sawPath := false
	err := object(dec, func(key string) error {
		if key != "path" {
			return fmt.Errorf("unknown field %q (want \"path\")", truncate(key, 32))
		}
		if sawPath {
			return errors.New(`duplicate field "path"`)
		}
		sawPath = true
		seen := map[string]bool{}
		return object(dec, func(path string) error {
			if seen[path] {
				return fmt.Errorf("duplicate path %q", truncate(path, 80))
			}
			seen[path] = true
			if len(seen) > maxPolicyRules {
				return fmt.Errorf("more than %d path rules", maxPolicyRules)
			}
			rule, err := parseRule(dec, path)
			if err != nil {
				return err
			}
			p.Rules = append(p.Rules, rule)
			return nil
		})
	})
	if err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the document")
	}
	if len(p.Rules) == 0 {
		return errors.New(`no path rules (want {"path": {"<pattern>": {"capabilities": [...]}}})`)
	}
	return nil
}

func parseRule(dec *json.Decoder, path string) (Rule, error) {
	pat, err := compilePattern(path)
	if err != nil {
		return Rule{}, err
	}
	r := Rule{Path: path, pat: pat}
	sawCaps := false
	err = object(dec, func(key string) error {
		if key != "capabilities" {
			return fmt.Errorf("path %q: unknown field %q (want \"capabilities\")", truncate(path, 80), truncate(key, 32))
		}
		if sawCaps {
			return fmt.Errorf("path %q: duplicate field \"capabilities\"", truncate(path, 80))
		}
		sawCaps = true
		var names []string
		if err := dec.Decode(&names); err != nil {
			return fmt.Errorf("path %q: capabilities: want a list of strings", truncate(path, 80))
		}
		for _, n := range names {
			c, err := ParseCapability(n)
			if err != nil {
				return fmt.Errorf("path %q: unknown capability %q", truncate(path, 80), truncate(n, 32))
			}
			r.Capabilities |= c
		}
		return nil
	})
	if err == nil && r.Capabilities == 0 {
		err = fmt.Errorf("path %q: no capabilities", truncate(path, 80))
	}
	return r, err
}

// object reads a JSON object from dec, calling fn with each key; fn must
// consume the value.
func object(dec *json.Decoder, fn func(key string) error) error {
	t, err := dec.Token()
	if err != nil {
		return errors.New("malformed JSON")
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return errors.New("want a JSON object")
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return errors.New("malformed JSON")
		}
		key, ok := t.(string)
		if !ok {
			return errors.New("malformed JSON")
		}
		if err := fn(key); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return errors.New("malformed JSON")
	}
	return nil
}

// WritePolicy validates and stores a policy, replacing any of that name.
// Every node's Authorizer sees the change once the write has reached it.
func (s *Service) WritePolicy(ctx context.Context, name string, doc []byte) error {
	if name == PolicyRoot {
		return fmt.Errorf("%w: the root policy is built in and cannot be changed", ErrInvalid)
	}
	if _, err := ParsePolicy(name, doc); err != nil {
		return err
	}
	ops := []raftstore.Op{
		{Kind: raftstore.OpPut, Table: tablePolicies, Key: []byte(name), Value: doc},
		{Kind: raftstore.OpPut, Table: tableMeta, Key: policyVersionKey, Value: []byte(rand.Text())},
	}
	if _, err := s.store.Txn(ctx, ops); err != nil {
		return fmt.Errorf("auth: write policy %q: %w", name, err)
	}
	s.authz.invalidate()
	return nil
}

// ReadPolicy returns a policy, built-in or stored.
func (s *Service) ReadPolicy(ctx context.Context, name string) (*Policy, error) {
	if err := validName("policy", name); err != nil {
		return nil, err
	}
	p, err := s.loadPolicy(ctx, name)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, fmt.Errorf("%w: policy %q", ErrNotFound, name)
	}
	return p, nil
}

// loadPolicy returns the named policy, or nil if there is none.
func (s *Service) loadPolicy(ctx context.Context, name string, opts ...raftstore.ReadOption) (*Policy, error) {
	if name == PolicyRoot {
		return ParsePolicy(name, rootDocument)
	}
	doc, found, err := s.get(ctx, tablePolicies, []byte(name), opts...)
	if err != nil {
		return nil, fmt.Errorf("auth: read policy %q: %w", name, err)
	}
	if !found {
		if name == PolicyDefault {
			return ParsePolicy(name, defaultDocument)
		}
		return nil, nil
	}
	return ParsePolicy(name, doc)
}

// ListPolicies returns the names of all policies, built-in ones included,
// sorted.
func (s *Service) ListPolicies(ctx context.Context) ([]string, error) {
	names := []string{PolicyDefault, PolicyRoot}
	err := s.listAll(ctx, tablePolicies, nil, true, func(kv raftstore.KV) error {
		if string(kv.Key) != PolicyDefault {
			names = append(names, string(kv.Key))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// DeletePolicy removes a stored policy; deleting an absent one does
// nothing. Tokens keep the name; it grants nothing until written again.
func (s *Service) DeletePolicy(ctx context.Context, name string) error {
	if name == PolicyRoot || name == PolicyDefault {
		return fmt.Errorf("%w: the %s policy is built in and cannot be deleted", ErrInvalid, name)
	}
	if err := validName("policy", name); err != nil {
		return err
	}
	_, found, err := s.get(ctx, tablePolicies, []byte(name))
	if err != nil {
		return fmt.Errorf("auth: delete policy %q: %w", name, err)
	}
	if !found {
		return nil
	}
	ops := []raftstore.Op{
		{Kind: raftstore.OpDelete, Table: tablePolicies, Key: []byte(name)},
		{Kind: raftstore.OpPut, Table: tableMeta, Key: policyVersionKey, Value: []byte(rand.Text())},
	}
	if _, err := s.store.Txn(ctx, ops); err != nil {
		return fmt.Errorf("auth: delete policy %q: %w", name, err)
	}
	s.authz.invalidate()
	return nil
}
