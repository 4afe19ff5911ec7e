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

// Ceremony kinds: each gathers a quorum of unseal shares, one per call,
// under a nonce that its initiator receives once.
const (
	// CeremonyGenerateRoot makes a root token; public, as the shares are the
	// proof (/v1/sys/generate-root/attempt and /update).
	CeremonyGenerateRoot = "generate-root"
	// CeremonyRekey splits a new unseal key into new shares
	// (/v1/sys/rekey/init and /update).
	CeremonyRekey = "rekey"
	// CeremonyRotateRoot replaces the root key (/v1/sys/rotate-root/init
	// and /update).
	CeremonyRotateRoot = "rotate-root"
)

// CeremonyRequest starts (init), continues (update) or cancels a ceremony.
type CeremonyRequest struct {
	// Nonce names the ceremony; update and cancel must give it.
	Nonce string `json:"nonce,omitempty"`
	// Key is one current unseal share (hex), for update.
	Key string `json:"key,omitempty"`
	// OTP, for generate-root init, is the base64 of OTPLength random bytes:
	// the new root token comes back XOR'd with it.
	OTP string `json:"otp,omitempty"`
	// SecretShares and SecretThreshold shape the new split, for rekey init.
	SecretShares    int `json:"secret_shares,omitempty"`
	SecretThreshold int `json:"secret_threshold,omitempty"`
	// Recipients, for rekey init, are age public keys ("age1..."), one per
	// new share: share i comes back encrypted to recipient i.
	Recipients []string `json:"recipients,omitempty"`
}

// CeremonyStatus is where a ceremony stands, and its result once complete.
// The nonce is in the answer to init only; the result only in the answer
// to the update that completes the ceremony.
type CeremonyStatus struct {
	Kind      string    `json:"kind"`
	Started   bool      `json:"started"`
	StartedAt time.Time `json:"started_at,omitzero"`
	Nonce     string    `json:"nonce,omitempty"`
	Progress  int       `json:"progress"`
	Required  int       `json:"required"`
	Complete  bool      `json:"complete"`
	// OTPLength is the length of the OTP generate-root init needs.
	OTPLength int `json:"otp_length,omitempty"`
	// EncodedToken is the new root token XOR'd with the OTP, base64.
	EncodedToken string `json:"encoded_token,omitempty"`
	// SecretShares and SecretThreshold are the new split of a rekey.
	SecretShares    int `json:"secret_shares,omitempty"`
	SecretThreshold int `json:"secret_threshold,omitempty"`
	// Keys are the new shares (hex) of a rekey without recipients;
	// KeysEncrypted the new shares, each armored age ciphertext of the hex
	// share to the recipient of the same index.
	Keys          []string `json:"keys,omitempty"`
	KeysEncrypted []string `json:"keys_encrypted,omitempty"`
	// RootGeneration is the root key's generation after a rotate-root.
	RootGeneration uint32 `json:"root_generation,omitempty"`
}

// KeyStatus is GET /v1/sys/key-status and the answer to POST
// /v1/sys/rotate: the barrier keyring's active term.
type KeyStatus struct {
	Term        uint32    `json:"term"`
	InstallTime time.Time `json:"install_time"`
	Age         string    `json:"age"` // Go duration, by the server's clock
	// Encryptions is the cluster's count under Term: encryptions reserved
	// by the nodes, an upper bound of those made.
	Encryptions uint64 `json:"encryptions"`
	Terms       int    `json:"terms"`
	RotationConfig
}

// RotationConfig is GET and POST /v1/sys/rotate/config: when the keyring
// rotates by itself.
type RotationConfig struct {
	MaxEncryptions uint64 `json:"max_encryptions"`
	Interval       string `json:"interval"` // Go duration; "0s": never by age
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
	// APIHosts are the DNS names and IPs the new node's API certificate may
	// name besides its node ID and loopback; ClusterHosts, when given, the
	// hosts its cluster address may have.
	APIHosts     []string `json:"api_hosts,omitempty"`
	ClusterHosts []string `json:"cluster_hosts,omitempty"`
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
