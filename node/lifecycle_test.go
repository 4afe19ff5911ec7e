package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"

	"github.com/custos-pki/custos/audit"
	"github.com/custos-pki/custos/kms"
)

// TestActivationUndoesItsStepsWhenOneFails injects a failing step after
// each step of a real node's activation: what the earlier steps started is
// let go (the key manager closed and off the barrier, the audit log
// closed), the node has no services, and a later activation works.
func TestActivationUndoesItsStepsWhenOneFails(t *testing.T) {
	tc := newTestCluster(t, 1)
	n := tc.nodes[0]
	ctx := context.Background()
	injected := errors.New("injected failure")
	steps := n.activationSteps()
	for i := range steps {
		t.Run(steps[i].name, func(t *testing.T) {
			n.seal()
			for _, k := range tc.keys[:3] {
				share, _ := hex.DecodeString(k)
				if _, err := n.barrier.Unseal(ctx, share); err != nil {
					t.Fatal(err)
				}
			}
			var seen *activation
			withFault := append(append([]activationStep{}, steps[:i+1]...), activationStep{"fault", func(_ context.Context, a *activation) error {
				seen = a
				return injected
			}})
			if _, err := n.activateWith(ctx, withFault); !errors.Is(err, injected) {
				t.Fatalf("activate = %v", err)
			}
			if _, err := n.Services(); !errors.Is(err, kms.ErrSealed) {
				t.Fatalf("Services after a failed activation: %v", err)
			}
			if seen.undo != nil {
				t.Fatal("the undo list was not run")
			}
			if _, err := seen.k.CreateKey(ctx, "after-failure", kms.KeyOptions{}); !errors.Is(err, kms.ErrSealed) {
				t.Fatalf("the abandoned key manager still works: %v", err)
			}
			if seen.audit != nil {
				if err := seen.audit.Log(&audit.Entry{Type: audit.TypeRequest}); err == nil {
					t.Fatal("the abandoned audit log still writes")
				}
			}
			if seen.auditKey != nil && !allZero(seen.auditKey) {
				t.Fatal("the audit key stayed in memory")
			}
			// A clean activation afterwards gives working services.
			svc, err := n.activate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := svc.KMS.CreateKey(ctx, fmt.Sprintf("ok-%d", i), kms.KeyOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
