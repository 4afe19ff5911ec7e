// Package raftstore is custos's replicated, linearizable key-value store.
//
// A Store is one node of a Raft cluster (github.com/hashicorp/raft). Its state
// machine is a bbolt file: every committed batch of log entries is applied in
// one bbolt transaction that also records the applied index, so a restarted
// node never applies an entry twice and never replays what its file holds.
// The log and stable store are raft-boltdb/v2 behind a log cache.
//
// What it promises:
//   - Every write goes through Raft and returns once it is applied on the node
//     that answers. Any node accepts writes: a follower forwards them to the
//     leader over the cluster port, tagged with a request ID so that a retry is
//     applied once.
//   - Reads are linearizable unless the caller asks for a stale read.
//   - Values are byte-exact. A failed compare is a result, not an error,
//     and names the operation that failed; OpCompare compares without
//     writing, so a caller can make a write depend on other records
//     (a guard) and tell their change from its own conflict.
//   - Commands are applied deterministically; anything non-deterministic (the
//     time) is stamped by the proposer before Raft sees the command.
//   - Node-to-node traffic runs on one TCP port with mutual TLS; a peer must
//     present a certificate for the Raft server ID it is known by, and only
//     servers of the latest configuration may open Raft or forwarding
//     connections (a node with no configuration yet accepts any node of the
//     cluster CA, or it could never hear from its first leader).
//   - A non-voter may read but not write; it becomes a voter only through
//     Promote, with a proof the leader's Config.Admit accepts. A server ID
//     or address already in the configuration is never moved to another.
//   - A backup is the whole state as of a linearizable read, streamed from a
//     temporary copy so that a slow reader holds no transaction. It names
//     the cluster it came from (an ID the first leader makes); restoring a
//     backup of another cluster needs force. A restored backup becomes a
//     snapshot past the end of the log, and the cluster takes writes as soon
//     as Restore returns, whichever cluster the backup came from and however
//     far along it was.
//   - Snapshots hold the live keys and values, compressed (snapfile.go), and
//     one is kept; a node also reads snapshots of the form before (the whole
//     state file), as existing clusters hold them, and backups. The log
//     keeps 1024 entries behind the newest snapshot, which is taken every
//     2048 entries at most once per SnapshotInterval: a follower further
//     behind is sent the snapshot. Tables whose keys grow with time
//     (Config.OrderedTables) and the store's own request tables fill their
//     pages instead of leaving them half empty (fill.go).
//   - The state file's pages that bbolt maps count in the node's RSS once
//     read; from 128 MiB on, the store drops its mapping of them every 10 s
//     (within a second once the process's resident file pages pass 384
//     MiB), every 32 MiB that listings read, and every 32 MiB of a snapshot
//     and after it (mapped.go), so RSS counts the pages used since rather
//     than every page a scan read. They stay in the page cache.
//
// raftstore sees only bytes: encryption is the job of the kms barrier above it.
package raftstore
