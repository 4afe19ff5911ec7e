package node

import (
	"context"
	"fmt"
	"io"

	"github.com/custos-pki/custos/api"
)

// RaftStatus reports the cluster as this node sees it.
func (n *Node) RaftStatus(context.Context) (api.RaftStatus, error) { return n.store.Status(), nil }

// RemovePeer removes a server from the cluster.
func (n *Node) RemovePeer(ctx context.Context, id string) error { return n.store.RemoveServer(ctx, id) }

// StepDown makes the leader hand leadership to another voter. On a
// follower it is refused: ask the leader.
func (n *Node) StepDown(context.Context) error {
	if !n.store.IsLeader() {
		return fmt.Errorf("%w: step-down must be sent to the leader", ErrInvalid)
	}
	return n.store.TransferLeadership()
}

// SnapshotSave streams a consistent backup of the whole store. It holds
// only ciphertexts: everything was written through the barrier.
func (n *Node) SnapshotSave(ctx context.Context, w io.Writer) error {
	_, err := n.store.Backup(ctx, w)
	return err
}

// SnapshotRestore replaces the cluster's state with a backup; it must be
// sent to the leader. A backup from another cluster needs force, and then
// brings that cluster's barrier: every node seals (see afterRestore) and
// opens with that cluster's unseal keys.
func (n *Node) SnapshotRestore(ctx context.Context, r io.Reader, force bool) error {
	if !n.store.IsLeader() {
		return fmt.Errorf("%w: snapshot restore must be sent to the leader", ErrInvalid)
	}
	return n.store.Restore(ctx, r, force)
}
