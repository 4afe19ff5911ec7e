// Package auth holds custos's tokens, policies and certificate-login roles.
//
// Everything is kept through the narrow Storage interface: in production the
// kms barrier, which encrypts every value, over the replicated raftstore.
//
// What it promises:
//   - A token is 256 bits from crypto/rand, handed out once as "cst_" plus
//     base64url. Only its SHA-256 is kept, as a storage key; the token itself
//     is never stored, logged or put in an error. Each token also has an
//     accessor, a separate random ID that names it without granting anything.
//   - A child token never holds a policy its parent lacks (unless the parent
//     holds "root") and never outlives its parent: its expiry is capped by
//     the parent's when it is created and when it is renewed. Revoking a
//     token revokes its descendants. Revocation first marks the token (it is
//     refused from then on and can gain no children), then revokes the
//     children, then deletes it; an interrupted revocation is finished by a
//     retry or by Tidy.
//   - AuthorizeLocal decides from this node's state, with no round trip,
//     and returns the compares (the token's record, the policy version
//     that every policy change replaces) a write must carry to be
//     authorised at its commit; it never refuses: what this node's state
//     does not allow is for Authenticate and Allowed to decide.
//   - Expired tokens are refused by Lookup and removed by Tidy. Time comes
//     from an injected Clock.
//   - Policies are deny by default: see Authorizer for the matching rules.
//     "root" allows everything and cannot be written or deleted; "default"
//     (a token's access to itself) is attached to every token except root
//     tokens and cannot be deleted.
//   - Certificate login verifies the presented chain against the role's CA
//     certificates for client authentication, at the Clock's time, before
//     any other constraint, refuses a certificate that the configured
//     RevocationChecker reports revoked (custos's own CA) or that the CRL
//     named by the role (crl_url, fetched from that URL only, size-capped,
//     signature-checked, kept until its nextUpdate) lists, refuses every
//     login while either check fails, and never issues a token that
//     outlives the certificate. OCSP for outside issuers is not asked.
//     Login tokens are indexed by the certificate's issuer name and serial,
//     and RevokeCertTokens revokes those of one certificate with their
//     descendants: the node calls it when custos's CA revokes a
//     certificate (Vault keeps such tokens). That runs after the
//     revocation, on the node that revoked; if it fails it is logged, and
//     the tokens still end no later than the certificate.
//   - Errors wrap one of ErrInvalid, ErrNotFound, ErrPermissionDenied or
//     ErrExpired, or a storage error; none holds a token.
package auth
