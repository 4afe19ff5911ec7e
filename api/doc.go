// Package api is custos's HTTPS API: the router, the middleware every
// request passes through (request IDs, body limits, authentication,
// authorisation, audit, metrics) and one file of handlers per domain.
//
// What it promises:
//   - Deny by default: every route names the policy capability it needs;
//     only health, seal status, init, unseal, the cluster join call and the
//     public CA material are served without a token.
//   - Every error is a JSON document {"error": {"code", "message",
//     "request_id"}} with a stable code; errors from the packages below are
//     translated to a status and a code in one place (errors.go).
//   - Request bodies are size-limited and decoded strictly: unknown fields,
//     trailing data and wrong types are refused before anything changes.
//     Bodies to step-ca's paths (ACME, step's API) are capped at 64 KiB
//     before they are forwarded to the leader or reach step-ca: 413, or the
//     ACME malformed problem under /acme/. Snapshot restores are streamed,
//     bounded by raftstore's backup size limit.
//   - Every authenticated request is written to the audit log before it is
//     acted on, and its response after; if the audit log cannot be written
//     the request fails. Secrets are HMAC'd in the log, never plain.
//   - A token is checked, and a request authorised, on current state: a
//     linearizable read of the token, then the policies from the state it
//     brought up to date. A secret write (the routes marked guarded:
//     writing, patching, deleting, undeleting and destroying versions,
//     writing and deleting metadata, native and Vault) is authorised from
//     this node's state instead, and proves it at its commit: its
//     transaction compares the token's record and the policy version
//     with what the decision read (secrets.WithGuard), so it commits only
//     if both are unchanged, and is as authorised at its commit index as
//     a request checked before it. Nothing is refused from that state: a
//     token unknown there, expired, limited-use, or policies that do not
//     allow the write, and a guard that fails or an error the write
//     would answer, are decided again on current state as above.
//   - Load is shed before it reaches a handler (Limits): caps on requests
//     in flight and on connections (503 with Retry-After), and a limit per
//     client address on the unauthenticated routes that do work (429 with
//     Retry-After). Refusals for load are not audited. The client address
//     is the TCP peer, or what a cluster member's proxy names.
//   - One adapter (handle, handler.go) serves every JSON route: 200 with a
//     body, or 204 when there is nothing to say (deletes included).
//   - A Vault-compatible API (vault.go) is a second route table over the
//     same handlers, policies and audit, with Vault's wire format (its
//     envelope, {"errors": [...]}, lenient bodies); it alone relaxes the
//     strict decoding above, and a Vault path is authorised as the native
//     path it maps to, so one set of policies covers both.
//
// No package below api knows about HTTP.
package api
