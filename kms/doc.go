// Package kms is custos's seal, storage barrier and key manager.
//
// # Hierarchy
//
// An unseal key (split into Shamir shares, t of n, or kept in a 32-byte key
// file for unattended nodes) encrypts a random 256-bit root key; the root key
// encrypts the barrier keyring; the keyring's terms encrypt every value
// written through the Barrier. The seal configuration, the encrypted root key
// and the encrypted keyring live in storage (table "kms.core"), so every node
// of the cluster unseals with the same shares. The root key and the keyring
// exist in memory only while unsealed and are overwritten on Seal.
//
// # Barrier
//
// A Barrier wraps a Storage (a *raftstore.Store) and offers the same
// operations over plaintext. It promises:
//   - Every value is AES-256-GCM encrypted under the active keyring term, with
//     its table and key (length-prefixed) as associated data, so a value
//     cannot be moved to another key. Rotating the keyring adds a term; values
//     under older terms still decrypt. A node that reads a value under a term
//     it does not know re-reads the keyring once (ReloadKeyring).
//   - No term seals more than RotationConfig.MaxEncryptions values (default
//     2^30, at most 2^31, far below GCM's 2^32 limit for random nonces): a
//     node reserves encryptions in blocks (at most 2^16) with a
//     compare-and-swap that adds the block to the cluster's count for the
//     term before it uses them, so counts from all nodes add up and the
//     stored count is an upper bound even when a node stops without notice
//     (it then wastes at most one block). When a term's count is spent, the
//     node that needs more rotates the keyring; RotateIfDue also rotates a
//     term older than RotationConfig.Interval (default 30 days). Before
//     reserving, a node reloads the keyring, so it follows a rotation made
//     elsewhere within one block.
//   - Compare-and-swap compares plaintexts: each stored value starts with
//     HMAC-SHA256(table, key, plaintext) under a keyring key that never
//     rotates, and the barrier compares that prefix. An observer of storage
//     learns whether the value at one key returned to an earlier value, and
//     nothing else.
//   - While sealed, everything except CreateTable fails with ErrSealed.
//   - Tables starting with "kms." are the KMS's own and are refused.
//
// # Named keys
//
// A KMS keeps named keys of the types listed under KeyType, each with
// numbered versions, and performs encrypt, decrypt, rewrap, data keys, sign,
// verify, HMAC and batch operations with them. It promises:
//   - Key material is stored only through the barrier and is never returned,
//     except by Export for keys created exportable (the default is not, and a
//     key made non-exportable can never become exportable again). A sign key
//     is offered in-process as a crypto.Signer.
//   - Ciphertexts, signatures and HMACs name the key version that made them.
//     The Go API returns them in binary form; FormatCiphertext gives the text
//     form "custos:v<N>:<base64>" (Vault's layout) for the wire, and every
//     function accepts either (see ParseCiphertext).
//   - The default type, aes256-gcm96-hkdf, has no practical message limit
//     (see kms/internal/subkey) and costs what plain AES-256-GCM costs;
//     aes256-gcm96 keeps Vault's format and is rotated before 2^32 uses.
//   - Bad input (wrong key, altered or truncated ciphertext, wrong associated
//     data, a version below the minimum, disabled or destroyed, an unknown
//     type) gets an error and changes nothing. Errors never hold plaintext
//     or key material.
//   - Operations read storage only when the key's metadata is not cached or
//     is older than Config.CacheTTL: the encrypt path does not touch storage.
//     Changes made on another node therefore take effect within CacheTTL, or
//     at once if the server calls Invalidate.
//   - Per-version use counts are kept in memory and added to storage by
//     FlushUsage (run by Maintain), not written on every operation; a node
//     that stops loses at most one interval of counts. Automatic rotation by
//     use count acts on the flushed counts of all nodes.
//   - A key is deleted only after a waiting period: it needs DeletionAllowed,
//     ScheduleDeletion makes it unusable at once, and Maintain deletes it
//     when the date has passed.
//
// Randomness comes from crypto/rand only. Times come from the injected Clock.
//
// Memory hygiene is best effort: key bytes the package owns are overwritten
// on seal, but Go gives no way to wipe the key schedules inside crypto/aes or
// the big integers of RSA and ECDSA keys; those are only dropped.
//
// # Errors
//
// Every error for a caller's mistake or the KMS's state matches one of five
// categories (ErrInvalid, ErrNotFound, ErrSealed, ErrForbidden,
// ErrConflict; see Category). Storage errors from the Barrier's methods
// (raftstore.ErrNotFound among them) pass through unchanged.
package kms
