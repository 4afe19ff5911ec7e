//go:build !linux

package raftstore

// dropMapped does nothing on systems other than Linux, whose madvise
// advice differ in what they do to a shared file mapping.
func dropMapped(uintptr, int64) error { return nil }

// residentFileBytes is not known on systems other than Linux.
func residentFileBytes() (int64, bool) { return 0, false }
