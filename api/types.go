package api

import (
	"encoding/json"
	"time"

	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/raftstore"
)

// Health is GET /v1/sys/health. Its status code tells a load balancer what
// the node can do: 200 initialized, unsealed and part of a cluster with a
// leader; 429 unsealed but without a leader (no quorum); 503 sealed; 501
// not initialized.
type Health struct {
	Initialized bool      `json:"initialized"`
	Sealed      bool      `json:"sealed"`
	Standby     bool      `json:"standby"`
	HasLeader   bool      `json:"has_leader"`
	NodeID      string    `json:"node_id"`
	LeaderID    string    `json:"leader_id,omitempty"`
	Version     string    `json:"version"`
	ServerTime  time.Time `json:"server_time"`
}

// SealStatus is GET /v1/sys/seal-status and the answer to unseal calls.
type SealStatus struct {
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	Type        string `json:"type"` // "shamir" or "keyfile"
	Shares      int    `json:"shares"`
	Threshold   int    `json:"threshold"`
	Progress    int    `json:"progress"`
	NodeID      string `json:"node_id"`
}

// InitRequest is POST /v1/sys/init.
type InitRequest struct {
	SecretShares    int `json:"secret_shares"`
	SecretThreshold int `json:"secret_threshold"`
}

// InitResponse carries the unseal shares and the root token, once.
type InitResponse struct {
	Keys          []string `json:"keys"` // hex; empty with an auto-unseal key file
	RootToken     string   `json:"root_token"`
	ClusterCACert string   `json:"cluster_ca_cert"`
}

// UnsealRequest is POST /v1/sys/unseal: one share per call.
type UnsealRequest struct {
	Key   string `json:"key"`
	Reset bool   `json:"reset"`
}

// GenerateRootRequest is POST /v1/sys/generate-root: a quorum of unseal
// shares, one per call, makes a new root token.
type GenerateRootRequest struct {
	Key   string `json:"key"`
	Reset bool   `json:"reset"`
}

// GenerateRootResponse reports progress; RootToken is set on completion.
type GenerateRootResponse struct {
	Progress  int    `json:"progress"`
	Required  int    `json:"required"`
	Complete  bool   `json:"complete"`
	RootToken string `json:"root_token,omitempty"`
}

// RekeyRequest is POST /v1/sys/rekey: shares of the current unseal key, one
// per call, and the shape of the new split.
type RekeyRequest struct {
	Key             string `json:"key"`
	SecretShares    int    `json:"secret_shares"`
	SecretThreshold int    `json:"secret_threshold"`
	Reset           bool   `json:"reset"`
}

// RekeyResponse reports progress; Keys are the new shares on completion.
type RekeyResponse struct {
	Progress int      `json:"progress"`
	Required int      `json:"required"`
	Complete bool     `json:"complete"`
	Keys     []string `json:"keys,omitempty"`
}

// RaftStatus is GET /v1/sys/raft/peers.
type RaftStatus = raftstore.Status

// RemovePeerRequest is POST /v1/sys/raft/remove-peer.
type RemovePeerRequest struct {
	NodeID string `json:"node_id"`
}

// JoinTokenRequest is POST /v1/sys/join-token.
type JoinTokenRequest struct {
	TTL string `json:"ttl"` // Go duration; default 1h, at most 24h
}

// JoinTokenResponse is a one-time join token and the fingerprint a new node
// pins the cluster CA with.
type JoinTokenResponse struct {
	Token         string    `json:"token"`
	ExpiresAt     time.Time `json:"expires_at"`
	CAFingerprint string    `json:"ca_fingerprint"` // hex SHA-256 of the cluster CA certificate (DER)
}

// JoinRequest is POST /v1/sys/cluster/join, sent by a new node.
type JoinRequest struct {
	Token       string `json:"token"`
	NodeID      string `json:"node_id"`
	ClusterAddr string `json:"cluster_addr"`
	NodeCSR     string `json:"node_csr"` // PEM; for the cluster port
	APICSR      string `json:"api_csr"`  // PEM; for the HTTPS API
}

// JoinResponse carries the new node's certificates.
type JoinResponse struct {
	NodeCert string `json:"node_cert"`
	APICert  string `json:"api_cert"`
	CACert   string `json:"ca_cert"`
}

// TokenCreateRequest is POST /v1/auth/token/create.
type TokenCreateRequest struct {
	Policies    []string          `json:"policies"`
	TTL         string            `json:"ttl"`
	MaxTTL      string            `json:"max_ttl"`
	Renewable   *bool             `json:"renewable"`
	DisplayName string            `json:"display_name"`
	Meta        map[string]string `json:"meta"`
	NumUses     int               `json:"num_uses"`
}

// TokenResponse describes a token; ClientToken is set only where one is
// issued (create, login, generate-root).
type TokenResponse struct {
	ClientToken string `json:"client_token,omitempty"`
	auth.Token
}

// TokenRequest names a token (lookup, renew, revoke of another token).
type TokenRequest struct {
	Token     string `json:"token"`
	Accessor  string `json:"accessor"`
	Increment string `json:"increment"`
}

// PolicyRequest is PUT /v1/sys/policies/{name}: the policy document, as
// JSON text or as an object.
type PolicyRequest struct {
	Policy RawPolicy `json:"policy"`
}

// PolicyResponse is GET /v1/sys/policies/{name}: the document as written.
type PolicyResponse struct {
	Name   string          `json:"name"`
	Policy json.RawMessage `json:"policy"`
}

// CertLoginRequest is POST /v1/auth/cert/login over a TLS connection that
// presented a client certificate.
type CertLoginRequest struct {
	Role string `json:"role"`
}

// ListResponse lists names.
type ListResponse struct {
	Keys []string `json:"keys"`
}
