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
//     and connects to the configured challenge ports only: http-01 follows
//     at most 10 redirects, to http or https on port 80 or 443 (mapped to
//     the configured ports) or a configured port, and reads at most 4 KiB of
//     a response; step-ca sees a body that is not a key authorisation only
//     as a short escaped prefix, so it is never echoed or logged whole;
//   - the validator never connects to a denied address: link-local
//     (169.254.0.0/16 with the cloud metadata service, fe80::/10) and
//     unspecified addresses always, this node's own listeners, and the
//     ranges in Config.ValidatorDeny. Each address is checked as it is
//     dialled, after every lookup and redirect, for http-01 and tls-alpn-01,
//     DNS names and IP identifiers alike, so DNS rebinding gains nothing.
//     Other addresses, loopback and private ranges included, are allowed:
//     the services a private CA certifies live there. A refused connection
//     leaves the challenge pending with a connection error, as step-ca does
//     for any connection failure;
//   - ACME nonces cost no storage write and verify on any node; the set of
//     used nonces is bounded (a flood of bad signatures cannot grow it);
//   - ACME requests are rate-limited per account and per client address
//     (RateLimits): rateLimited with Retry-After, nothing charged for a
//     request that creates nothing;
//   - the ACME requests of one account run concurrently (cert-manager,
//     Caddy and Traefik share one account per issuer): only requests on
//     one object (an order, an authorization and its challenges, an
//     account) wait for each other on the serving node. A new order is
//     one storage transaction (its challenges, authorizations, order and
//     an entry of the account's order index, OrderIndexTable), costs no
//     read of the account's other orders, a challenge that validates is
//     written with its authorization (made valid, as step would at its
//     next read), an order's move to ready is not written (step works it
//     out from the authorizations at each read, as Boulder does), and a
//     finalisation writes the ACME certificate with the order and, when
//     the Recorder is a RecordPreparer (custos' inventory), with the
//     Recorder's record: a complete issuance is three storage writes (new
//     order, challenge, certificate with its record and the valid order;
//     four with another Recorder), and reads write nothing. No signed
//     certificate goes unrecorded: a record its finalisation does not
//     claim within Config.StoreTimeout is written alone, and so is one
//     its finalisation fails to write, before the failure is returned.
//     Orders and authorizations only move forward: updates are
//     compare-and-swaps, and one computed from a stale read is not
//     written. The order list shows pending orders;
//   - certificates are not stored twice: with a Recorder that is a
//     CertificateReader and an OriginTeller (custos' inventory), an ACME
//     certificate record holds its account, its order, its expiry and a
//     reference to its issuing chain (ChainTable, one record per chain),
//     at the serial in hex (no serial index); step's authority reads a
//     certificate and its provisioner from the inventory and writes no copy
//     of its own. Records step wrote before are still read. A valid
//     authorization keeps only the challenge that was validated (RFC 8555,
//     7.1.4), the others are deleted;
//   - Collect deletes expired orders, authorizations and challenges;
//   - CollectCertificates deletes step's records (ACME and authority) of
//     certificates that expired more than a retention ago; a certificate
//     the inventory no longer holds can no longer be downloaded;
//   - ACME provisioners are named, stored through the barrier and served at
//     /acme/<name>/directory by every node as soon as it applied a change
//     (a stale read of one record per request tells it to reload). Each
//     has a name policy, wildcards on or off, key types, a maximum
//     lifetime, require_eab and optionally a REST role. Names are matched
//     by package ca's one matcher (ca.NamePolicy, ca.Role), never by
//     step's x509 policy engine: a refused name is rejectedIdentifier at
//     new-order (checked before step sees the order, for requests signed
//     by an account of that provisioner) and again at finalize, with the
//     key type (badCSR) and the lifetime (rejectedIdentifier);
//   - EAB keys are bound to one provisioner, and to one incarnation of it:
//     a provisioner deleted and made again gets a new step ID, so accounts
//     and keys of the old one do not work;
//   - JWK provisioners for the step CLI are stored like ACME provisioners
//     (one namespace of names, the same generation record, the same policy
//     and matcher). custos makes the key pair; the private key is kept only
//     as a JWE under the operator's password, as step-ca keeps it, and
//     served at /provisioners/<kid>/encrypted-key. A /sign whose token names
//     one is checked before step signs (403 for a name or key refused) and
//     again when the certificate is made; the lifetime is step's claim;
//   - step tokens may name as audience DNSNames, BaseURL's host and the
//     hosts Config.Hosts tells at each request (each member's API host);
//     FederatedRoots (custos' cluster CA, which signs the API's TLS) are
//     served at /federation and /root/<sha256>, and verify no client;
//   - step's /renew and /rekey are checked, before signing and again when
//     stored, against the policy that issued the certificate as it stands
//     now (the Recorder tells the origin: REST role, ACME provisioner, step
//     provisioner); a revoked certificate, a deleted role or provisioner, or
//     a name, key or lifetime no longer allowed is refused with 403.
//
// The HTTP handler must serve ACME on the Raft leader only: followers
// forward /acme requests (custos' api package does this). Step's handlers
// read their dependencies from the request context; the Server sets them in
// one middleware, and nowhere else.
package stepca
