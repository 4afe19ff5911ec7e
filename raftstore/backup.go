package raftstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// Backups. A backup is the state file as of a linearizable read: the
// tables, the applied index and the ID of the cluster it came from. It is
// a whole bbolt file, which bbolt's tools open; Restore also takes a
// snapshot in the compact form (snapfile.go).
//
// Restoring one follows hashicorp/raft's Raft.Restore: the backup becomes a
// snapshot at an index past the end of the leader's log, which every
// follower then installs. The applied index inside the backup counts the
// entries of the log it was taken from, not of this one, so it is replaced
// before Raft sees the file: the state machine skips every entry at or
// below the applied index in its file, and a backup from a cluster that was
// further along would otherwise skip every write that follows the restore.

// ErrOtherCluster is returned by Restore, without force, for a backup taken
// from another cluster (or one that names no cluster).
var ErrOtherCluster = fmt.Errorf("%w: the backup is from another cluster", ErrInvalidArgument)

// maxBackupSize bounds what Restore reads.
const maxBackupSize = 64 << 30

// restoreTimeout is the least time Restore gives Raft to install a backup.
const restoreTimeout = 5 * time.Minute

// Backup writes a consistent copy of the whole store (a bbolt file) to w.
// It reads linearizably: the copy holds every write acknowledged before it.
//
// The state is first copied to a temporary file in the data directory and
// streamed to w from there, so a slow reader holds no bbolt transaction:
// an open read transaction keeps bbolt from reusing the pages it sees and
// from growing its memory map, so the file would grow and writes could stall
// for as long as the client takes. The copy costs disk space the size of
// the state while the backup runs.
func (s *Store) Backup(ctx context.Context, w io.Writer) (int64, error) {
	if err := s.linearize(ctx); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(s.cfg.DataDir, backupTempPattern)
	if err != nil {
		return 0, fmt.Errorf("raftstore: backup: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := s.fsm.view(func(tx *bolt.Tx) error {
		_, err := tx.WriteTo(f)
		return err
	}); err != nil {
		return 0, fmt.Errorf("raftstore: backup: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("raftstore: backup: %w", err)
	}
	return io.Copy(w, f)
}

// backupTempPattern names Backup's temporary copies; Open removes any a
// crash left behind.
const backupTempPattern = "backup-*.tmp"

func removeBackupLeftovers(dir string) {
	old, _ := filepath.Glob(filepath.Join(dir, backupTempPattern))
	for _, p := range append(old, filepath.Join(dir, restoreTempName)) {
		os.Remove(p)
	}
}

const restoreTempName = "backup.restore"

// Restore replaces the state of the whole cluster with a backup. It runs on
// the leader; Raft sends the restored state to every follower, and the
// cluster takes writes as soon as it returns. The backup is checked before
// anything changes. Without force, a backup from another cluster (by the
// cluster ID in the state) is refused with ErrOtherCluster; with force the
// cluster takes on the backup's state and cluster ID.
func (s *Store) Restore(ctx context.Context, r io.Reader, force bool) error {
	defer wrote(ctx)
	if s.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	tmp := filepath.Join(s.cfg.DataDir, restoreTempName)
	defer os.Remove(tmp)
	if err := writeStateFile(tmp, io.LimitReader(r, maxBackupSize)); errors.Is(err, errSnapshot) {
		return fmt.Errorf("%w: not a backup: %v", ErrInvalidArgument, err)
	} else if err != nil {
		return fmt.Errorf("raftstore: restore: %w", err)
	}
	from, err := backupClusterID(tmp)
	if err != nil {
		return fmt.Errorf("%w: not a backup: %v", ErrInvalidArgument, err)
	}
	if err := s.linearize(ctx); err != nil {
		return err
	}
	if ours := s.fsm.clusterID(); !force && (from == "" || from != ours) {
		if from == "" {
			return fmt.Errorf("%w: it names no cluster; this is cluster %s (restore with force)", ErrOtherCluster, ours)
		}
		return fmt.Errorf("%w: cluster %s, this is cluster %s (restore with force)", ErrOtherCluster, from, ours)
	}
	// Raft gives the snapshot an index past its last one; an applied index
	// up to that last one is therefore never above the snapshot's, so no
	// entry after the restore is skipped.
	if err := stampApplied(tmp, s.raft.LastIndex()); err != nil {
		return fmt.Errorf("raftstore: restore: %w", err)
	}
	f, err := os.Open(tmp)
	if err != nil {
		return fmt.Errorf("raftstore: restore: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("raftstore: restore: %w", err)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: fi.Size()}
	// The timeout bounds handing the restore to Raft, and the no-op after
	// it, from now: it must leave room for copying a large backup.
	if err := s.raft.Restore(meta, f, max(timeoutOf(ctx), restoreTimeout)); err != nil {
		return fmt.Errorf("raftstore: restore: %w", raftErr(err))
	}
	// Mark the restored state with an entry of its own, so that
	// linearizable reads (which wait for the state to reach the commit
	// index) go on; it also names the cluster if the backup did not.
	_, err = s.propose(ctx, clusterIDCommand())
	return err
}

// backupClusterID checks that path is a state file and returns the cluster
// ID it names.
func backupClusterID(path string) (string, error) {
	db, err := openBolt(path)
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := readApplied(db); err != nil {
		return "", err
	}
	return readClusterID(db)
}

// stampApplied sets the applied index recorded in the state file at path.
func stampApplied(path string, idx uint64) error {
	db, err := openBolt(path)
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return errors.New("state file has no meta bucket")
		}
		return meta.Put(appliedKey, binary.BigEndian.AppendUint64(nil, idx))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// clusterIDCommand names the cluster with a new random ID, if the state
// names none yet.
func clusterIDCommand() *command {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	return &command{Type: cmdClusterID, Ops: []Op{{Kind: OpPut, Value: []byte(hex.EncodeToString(id))}}}
}

// ClusterID returns the ID of the cluster whose state this node holds; it
// is made by the cluster's first leader and carried by its backups.
func (s *Store) ClusterID() string { return s.fsm.clusterID() }
