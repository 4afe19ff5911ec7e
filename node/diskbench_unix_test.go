//go:build unix

package node

import (
	"os"
	"syscall"
)

// allocated is the disk space a file takes: its allocated blocks, which
// for a sparse file (bbolt grows its files by truncation) are fewer than
// its size.
func allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}
