// Package secrets is custos's versioned secret store, in the manner of
// Vault's KV version 2, on top of the kms barrier and raftstore.
//
// A Store holds mounts; a mount holds secrets at slash-separated paths; a
// secret is a JSON object with numbered versions and metadata (times,
// current and oldest version, max_versions, delete_version_after,
// cas_required, custom metadata, and per version its creation and deletion
// times and whether it was destroyed).
//
// What it promises:
//   - Envelope encryption under the barrier: each mount has its own kms key
//     ("_secrets-<mount>"); every version is encrypted (AES-256-GCM) under
//     a fresh data key from GenerateDataKey, and the wrapped data key is kept
//     in the secret's metadata record. The data key's associated data binds
//     it to the mount, the path, the secret and the version; the value's
//     binds it to the mount, the secret and the version. Every record is
//     then written through the Storage given to New (the barrier), which
//     encrypts it again. Nothing below this package sees a plaintext value,
//     wrapped key or custom metadata. Paths, as in Vault, are storage keys
//     (listing needs their order): they are not encrypted, so keep secrets
//     out of paths.
//   - Every change to a secret is one raftstore transaction that compares
//     and swaps the secret's metadata record: of concurrent writers, on any
//     nodes, exactly one wins each version; with check-and-set the others
//     get ErrCASMismatch, without it they retry on the new version (and get
//     ErrBusy if they keep losing). Pruning beyond max_versions, destroying
//     and deleting happen in the same transaction as the change that causes
//     them. A write also checks, in that transaction, that its mount is
//     still live, so no write lands in a mount being deleted.
//   - Reads are linearizable: a call makes one linearizable read (of the
//     mount) and reads the rest from this node's state, which that read
//     brought up to date. Within a read session (raftstore.WithReadSession,
//     one per API request) that read shares the index an earlier read of
//     the request took, such as its token check's. A write that loses a
//     compare-and-swap ends the session's sharing, so it reads the mount
//     linearizably afresh before it tries again.
//   - A write under a guard (WithGuard: a decision made from this node's
//     state, such as the API's authorisation of the request) reads the
//     mount and the secret from this node's state and commits only if the
//     guard's records and the mount are what it read; it answers no error
//     and no guard failure from that state without the guard's
//     confirmation on current state (see WithGuard).
//   - Move rewraps the data keys for the new path and moves the metadata in
//     one transaction: the secret is at exactly one of the two paths.
//   - Bad input (a path or mount name that CheckPath or the mount rules
//     refuse, data that is not a JSON object or is over MaxValueSize, a
//     check-and-set version that is not current, an unknown version) gets an
//     error and changes nothing.
//   - Destroy deletes a version's data and its wrapped data key. Raft log
//     entries and snapshots written before still hold both, encrypted, until
//     log compaction and snapshot rotation drop them.
//   - Errors match the kms categories (kms.ErrInvalid, kms.ErrNotFound,
//     kms.ErrConflict) and never hold a value.
//   - Times come from the injected Clock; randomness from crypto/rand.
//
// Deleting a mount deletes all it holds (without force, only when it holds
// nothing) and schedules its key for deletion after the kms deletion window;
// a mount of the same name created later reuses the key, under a new mount
// ID, so none of the old records can be reached from it.
package secrets
