// Package workload serves the SPIFFE Workload API and Envoy's Secret
// Discovery Service (SDS v3) on one Unix socket of a node, so that
// workloads and proxies on the node get short-lived X.509-SVIDs, JWT-SVIDs
// and trust bundles without holding any credential to ask with.
//
// # Who the caller is
//
// A caller is identified by the kernel, not by anything it sends: the
// socket's peer credentials (SO_PEERCRED: uid, gid and pid, taken when the
// connection was made) and, from /proc/<pid>, the path of its executable.
// The pid's start time is recorded at connection and checked again after
// the executable was read, so a process that exits and whose pid is reused
// by another is refused rather than mistaken for it. The caller's
// selectors (unix:uid:N, unix:gid:N, unix:user:NAME, unix:group:NAME,
// unix:path:/ABS/PATH, unix:sha256:HEX) are matched against registration
// entries: an entry applies when every one of its selectors holds. A
// caller that no entry matches gets PermissionDenied, as from SPIRE's
// agent. Workload API calls must carry the "workload.spiffe.io: true"
// metadata header (InvalidArgument otherwise), which keeps a browser or a
// confused proxy from being turned against the socket; Envoy's SDS calls
// do not send it and do not need it.
//
// # Entries and roles
//
// A registration entry (SPIFFE ID, selectors, role) is stored through the
// barrier and so replicated to every node; its ID is derived from the
// SPIFFE ID and the selectors, so the same registration made twice is a
// conflict. Every entry is bound to a CA role whose constraints apply to
// everything issued for it: the SPIFFE ID must be one of the role's
// allowed URI SANs (checked when the entry is made and at every issuance),
// and certificates get the role's TTL. Nodes read the entries again at
// most every Config.Resync, so a deleted entry stops being served within
// that time.
//
// # What is issued
//
// X.509-SVIDs are issued through the CA's REST issuance (ca.Issue): they
// are checked against the role, linted, recorded in the inventory, and
// carry the CA's AIA and CRL distribution point. The private key is made
// on the node, kept in memory only, and handed to the caller over the
// socket, as SPIRE does; it is never stored. One SVID per entry is cached
// and shared by the callers of that entry; it is replaced when two thirds
// of its lifetime (counted from when it was issued, since NotBefore is
// backdated) have passed, and every open stream is sent the new one. If the
// CA cannot issue (sealed, no leader), the current SVID is served until it
// expires.
//
// JWT-SVIDs (ES256) are signed by a non-exportable KMS key,
// "_custos-spiffe-jwt", made on first use and rotated by the KMS every 30
// days; the JWT bundle (JWKS) holds its current version and the versions
// replaced within the last day, keyed by RFC 7638 thumbprint. A JWT-SVID
// lives for the role's TTL but at most Config.JWTSVIDTTL (5 minutes, as in
// SPIRE).
//
// Every issuance is logged (SPIFFE ID, entry, role, serial; never a key
// or a token), and every certificate is in the CA's inventory, where it can
// be listed and revoked. The API's audit log records the changes to the
// entries; calls on the socket are not in it.
//
// The trust bundle of every trust domain of the caller's entries is the
// CA's roots: custos has one CA, and the trust domain is a name in the
// SPIFFE IDs its roles allow.
//
// # SDS
//
// StreamSecrets answers Envoy's subscriptions as SPIRE's agent does:
// tls_certificate secrets named by SPIFFE ID (or "default", the first
// SVID), and validation_context secrets named by trust domain
// ("spiffe://example.org" or "example.org") or "ROOTCA", with the roots as
// trusted_ca. A new version is pushed when a certificate rotates or the
// roots change; a request that ACKs an older nonce is ignored, a NACK is
// logged. A name the caller is not entitled to is InvalidArgument.
package workload
