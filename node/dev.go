package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/kms"
)

// devSetup makes a dev node ready to use: an unseal key file, init on
// first start, and an env file that points the CLI at the node.
func (n *Node) devSetup(ctx context.Context) error {
	if _, err := os.Stat(n.cfg.UnsealKeyFile); errors.Is(err, os.ErrNotExist) {
		if err := kms.GenerateKeyFile(n.cfg.UnsealKeyFile); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !n.store.IsLeader() {
		if time.Now().After(deadline) {
			return errors.New("node: dev node did not become leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	info := &DevInfo{CACertPath: n.CACertPath(), EnvFile: filepath.Join(n.cfg.DataDir, "env"), UnsealKeyFile: n.cfg.UnsealKeyFile}
	st, err := n.barrier.Status(ctx)
	if err != nil {
		return err
	}
	if !st.Initialized {
		resp, err := n.Init(ctx, api.InitRequest{})
		if err != nil {
			return err
		}
		info.RootToken = resp.RootToken
		env := fmt.Sprintf("export CUSTOS_ADDR=%s\nexport CUSTOS_TOKEN=%s\nexport CUSTOS_CACERT=%s\n", n.APIURL(), resp.RootToken, info.CACertPath)
		if err := writeFileAtomic(info.EnvFile, []byte(env), 0o600); err != nil {
			return err
		}
	} else {
		if err := n.unsealKeyFile(ctx); err != nil {
			return err
		}
		info.RootToken = "(see " + info.EnvFile + ")"
	}
	n.dev = info
	return nil
}
