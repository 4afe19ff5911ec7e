// Package ca is custos's certificate authority: its issuers, its roles, REST
// issuance, the inventory of every certificate issued, and revocation by CRL
// and OCSP.
//
// # Issuers
//
// Init makes a root and an intermediate whose keys are generated inside the
// KMS as non-exportable sign keys ("_custos-ca-root", "_custos-ca-int-N";
// the KMS HTTP API hides names starting with '_'), and signs through
// (*kms.KMS).Signer: no private key of the CA ever leaves the KMS. An
// intermediate can instead be signed by an external root (IntermediateCSR,
// SetIntermediate), and RotateIntermediate replaces the intermediate while
// the retired one stays known, for OCSP and its own CRL, until it expires.
// Every certificate a leaf could chain to is clamped to its issuer's
// lifetime, so a retired intermediate outlives everything it signed. The
// issuers' state is one record written by compare-and-swap; each node
// caches it for Config.CacheTTL.
//
// # Issuance
//
// Sign and Issue check a request against a role (names, IP ranges, URI SANs
// with SPIFFE patterns, key types and sizes, TTL) and refuse it, issuing
// nothing, on any mismatch: a TTL over the role's maximum is an error, not
// clamped. Then crypto/x509 builds the TBSCertificate for the issuer, which
// is linted with zlint (see Lint for the lints that run) under a
// placeholder signature, and only if no lint reports an error are those
// very bytes signed by the issuer in the KMS: one encoding and one
// signature per certificate, and nothing signed that was not linted. Every
// signature is checked with the issuer's public key before anything is
// returned (certificates by the KMS, after checking that the signing key is
// the issuer's; CRLs and OCSP responses here), and every certificate is
// recorded.
// Serial numbers are 128 random bits from crypto/rand. With Config.URLBase,
// every leaf names its issuer's OCSP responder, certificate (caIssuers) and
// CRL; SetURLs gives certificates built by the step-ca embedding the very
// same, so no path issues a certificate nothing can check.
//
// Names are matched by one engine: the rules of roles and NamePolicy (the
// allowed and denied names of ACME provisioners) share one matcher, and
// Role.CheckCertificate checks a whole certificate against a role as it
// stands, for renewals.
//
// # Inventory and revocation
//
// Every certificate from every path (REST, ACME, the step API) is recorded
// by serial with indexes by expiry, role and revocation, its DER kept as it
// is in a small binary record (records stored as JSON by earlier versions
// are still read, and rewritten when revoked). Revoking twice is a
// conflict (ErrAlreadyRevoked), as RFC 8555 "alreadyRevoked" is. Revoked
// tells certificate login whether a client certificate was revoked here; a
// certificate an issuer of this CA signed that the inventory does not hold
// counts as revoked.
//
// Tidy removes the certificates that expired more than a retention ago
// (DefaultCertRetention, 72 hours, as Vault's tidy safety_buffer): records
// and index entries, in bounded replicated transactions, on the leader. A
// revoked one stays while its issuer's current CRL was made before it
// expired and so still lists it. A removed certificate is unknown to Get,
// List and OCSP; it had expired, so no relying party accepts it anyway.
//
// CRLs are made on the leader only, one per live issuer, with a number that
// strictly increases (written by compare-and-swap), and stored; followers
// serve the stored CRL. A revocation marks its issuer's CRL stale in the
// same transaction, and the leader regenerates it at once (on the leader) or
// at its next Maintain; a CRL is also remade when half its validity is over.
// Revocations that arrive while one is made are covered by the next; callers
// that wait for the same CRL share it. A CRL has no size limit: its entries
// are read a page at a time and encoded as they come (memory about the size
// of the CRL, some 49 bytes an entry), and one over 256 KiB is stored in
// chunks under a new generation before the head that names it, with the
// chunks of older CRLs deleted after. A node keeps the last chunked CRL it
// read, so serving it again costs one read of the head. A million
// revocations make a CRL of about 47 MiB; a relying party that cannot take
// that wants partitioned CRLs, which custos does not make yet.
//
// The OCSP responder (RFC 6960) signs with the issuing intermediate itself.
// Each node caches its responses (at most Config.OCSPCacheSize, keyed by
// issuer, hash algorithm and serial) and serves one again until half its
// validity (Config.OCSPValidity) has passed: a flood of requests costs one
// signature and no Raft traffic, on followers as on the leader. Every
// revocation replaces its issuer's revocation epoch in the transaction that
// revokes; a cached response is served only while the epoch, read from the
// node's own state, is unchanged, and otherwise the certificate's status is
// read again and the response signed again if it changed. The node's state
// is checked against the cluster by one linearizable read per CacheTTL, not
// per request. So an answer reflects every revocation acknowledged more
// than CacheTTL (5 s by default) before the request, and on the node that
// revoked, every revocation at all; a node that cannot reach the leader
// answers tryLater once CacheTTL has passed. Requests for serials this CA
// never issued get a signed "unknown" and are cached like the others, so a
// client asking for random serials costs a signature each: rate-limit the
// public OCSP route in front of custos if that matters.
//
// # Errors
//
// Every error for a caller's mistake or the CA's state matches one of
// ErrInvalid, ErrNotFound, ErrConflict, ErrForbidden, which wrap the kms
// categories of the same meaning, so the API maps them without knowing this
// package. Storage and KMS errors pass through.
package ca
