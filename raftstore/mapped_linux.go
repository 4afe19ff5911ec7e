package raftstore

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// dropMapped unmaps the pages of the shared, read-only file mapping of
// size bytes at addr from the process: they stay in the page cache, and
// the next access maps them again.
func dropMapped(addr uintptr, size int64) error {
	if _, _, e := unix.Syscall(unix.SYS_MADVISE, addr, uintptr(size), unix.MADV_DONTNEED); e != 0 {
		return e
	}
	return nil
}

// residentFileBytes returns the bytes of file pages (and shared memory)
// resident in the process, from /proc/self/statm, which the kernel
// answers from counters without walking the mappings.
func residentFileBytes() (int64, bool) {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := bytes.Fields(raw) // size resident shared text lib data dt, in pages
	if len(f) < 3 {
		return 0, false
	}
	pages, err := strconv.ParseInt(string(f[2]), 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * int64(os.Getpagesize()), true
}
