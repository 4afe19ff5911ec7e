package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// After a restore. A restored backup replaces the whole state on every
// node, the barrier's keyring and seal record with it, so each node checks
// that the keys it holds in memory still open the restored keyring, as
// Vault does after a snapshot restore. If they do (a backup of this
// cluster, taken under the same root key), the node rebuilds its services
// on the restored state and stays unsealed. If not (a backup of another
// cluster, or one from before a root key rotation), the node seals: it is
// unsealed with the keys of the cluster the backup came from, and a node
// with an unseal key file tries that file again at once.

// noteRestore is raftstore's OnRestore hook: it runs on the state
// machine's goroutine, so it only signals watchRestores.
func (n *Node) noteRestore() {
	select {
	case n.restored <- struct{}{}:
	default: // one pending signal covers any number of restores
	}
}

func (n *Node) watchRestores() {
	defer n.wg.Done()
	for {
		select {
		case <-n.closing:
			return
		case <-n.restored:
			n.afterRestore()
		}
	}
}

// restoreReloadTimeout bounds how long a node tries to read the restored
// keyring before it gives up and seals.
const restoreReloadTimeout = 30 * time.Second

func (n *Node) afterRestore() {
	if n.barrier.Sealed() {
		return
	}
	n.log.Info("the state was restored from a snapshot: reloading the barrier keyring")
	n.dropServices()
	ctx, cancel := context.WithTimeout(context.Background(), restoreReloadTimeout)
	defer cancel()
	err := n.barrier.ReloadKeyring(ctx)
	for transient(err) && ctx.Err() == nil {
		select {
		case <-n.closing:
			return
		case <-time.After(200 * time.Millisecond):
		}
		err = n.barrier.ReloadKeyring(ctx)
	}
	if err == nil {
		if _, err = n.activate(ctx); err == nil {
			return
		}
	}
	n.log.Warn("sealing: this node's keys do not open the restored state; unseal it with the keys of the cluster the snapshot came from", "error", err)
	n.seal()
	if n.cfg.UnsealKeyFile != "" {
		select {
		case <-n.closing:
		default:
			n.wg.Add(1)
			go n.autoUnseal()
		}
	}
}

// transient reports whether a failed read may succeed on a retry.
func transient(err error) bool {
	return errors.Is(err, raftstore.ErrTimeout) || errors.Is(err, raftstore.ErrNoLeader) ||
		errors.Is(err, raftstore.ErrNotLeader) || errors.Is(err, raftstore.ErrUnknownOutcome)
}

// Scheduled backups. While BackupInterval is set, the node that leads the
// cluster when the interval comes round writes a backup into BackupDir and
// prunes that directory to the newest BackupKeep backups. Only the leader
// writes, so the backups of a cluster are spread over the nodes that led
// it: point every node's BackupDir at storage they share, or collect the
// directories. Backups hold what the store holds: ciphertexts, sealed by
// the barrier, and are written mode 0600.

const backupPrefix, backupSuffix = "custos-", ".snap"

// backupNameRE matches the names runBackups gives; prune removes nothing
// else.
var backupNameRE = regexp.MustCompile(`^custos-\d{8}T\d{6}\.\d{3}Z\.snap$`)

func (n *Node) runBackups() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.BackupInterval)
	defer t.Stop()
	for {
		select {
		case <-n.closing:
			return
		case <-t.C:
		}
		if !n.store.IsLeader() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(n.cfg.BackupInterval, 10*time.Minute))
		path, err := n.backupOnce(ctx, time.Now())
		cancel()
		if err != nil {
			n.log.Warn("scheduled backup failed", "error", err)
			continue
		}
		n.log.Info("scheduled backup written", "path", path)
	}
}

// backupOnce writes one backup named for now, atomically: a temporary file
// in the same directory, fsynced and renamed into place, then the
// directory fsynced; then it prunes old backups.
func (n *Node) backupOnce(ctx context.Context, now time.Time) (string, error) {
	dir := n.cfg.BackupDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	path := filepath.Join(dir, backupPrefix+now.UTC().Format("20060102T150405.000Z")+backupSuffix)
	tmp, err := os.CreateTemp(dir, ".custos-backup-*.tmp")
	if err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	if _, err := n.store.Backup(ctx, tmp); err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	ok = true
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	return path, pruneBackups(dir, n.cfg.BackupKeep)
}

// pruneBackups removes all but the newest keep backups in dir. The names
// sort by time.
func pruneBackups(dir string, keep int) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("backup: prune: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && backupNameRE.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	var errs []error
	for len(names) > keep {
		if err := os.Remove(filepath.Join(dir, names[0])); err != nil {
			errs = append(errs, err)
		}
		names = names[1:]
	}
	if len(errs) > 0 {
		return fmt.Errorf("backup: prune: %w", errors.Join(errs...))
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
