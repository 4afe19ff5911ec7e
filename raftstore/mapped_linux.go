package raftstore

import "golang.org/x/sys/unix"

// dropMapped unmaps the pages of the shared, read-only file mapping of
// size bytes at addr from the process: they stay in the page cache, and
// the next access maps them again.
func dropMapped(addr uintptr, size int64) error {
	if _, _, e := unix.Syscall(unix.SYS_MADVISE, addr, uintptr(size), unix.MADV_DONTNEED); e != 0 {
		return e
	}
	return nil
}
