//go:build !unix

package node

import "os"

// allocated is the disk space a file takes; here, its size.
func allocated(fi os.FileInfo) int64 { return fi.Size() }
