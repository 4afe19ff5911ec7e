// Package stepca embeds step-ca (github.com/smallstep/certificates) in
// custos: its authority, its ACME server (RFC 8555: http-01, dns-01 with
// wildcards, tls-alpn-01, IP identifiers, revocation, optional external
// account binding) and its own API for the step CLI.
//
// What it promises:
//   - step-ca's database is custos storage (DB, over the kms barrier), with
//     the semantics of step's bbolt driver;
//   - every certificate is signed by the issuer custos gives it (a kms key
//     behind crypto.Signer), after the linter passed the exact template, and
//     is recorded before it is handed out, whatever path it took;
//   - the ACME validator sends every DNS query to the configured resolver
//     and connects to the configured challenge ports;
//   - ACME nonces cost no storage write and verify on any node;
//   - an account's ACME requests run one at a time on the serving node, so
//     concurrent orders do not fail on step-ca's compare-and-swap writes;
//   - Collect deletes expired orders, authorizations and challenges.
//
// The HTTP handler must serve ACME on the Raft leader only: followers
// forward /acme requests (custos' api package does this). Step's handlers
// read their dependencies from the request context; the Server sets them in
// one middleware, and nowhere else.
package stepca
