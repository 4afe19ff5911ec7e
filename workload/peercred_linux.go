//go:build linux

package workload

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// peerCred returns the credentials the kernel recorded for the other end
// of a Unix socket when it connected.
func peerCred(conn net.Conn) (uid, gid uint32, pid int32, err error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return 0, 0, 0, errors.New("not a Unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, 0, 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, 0, err
	}
	if serr != nil {
		return 0, 0, 0, fmt.Errorf("SO_PEERCRED: %w", serr)
	}
	if cred.Pid <= 0 {
		return 0, 0, 0, errors.New("SO_PEERCRED: no pid (is the peer in another pid namespace?)")
	}
	return cred.Uid, cred.Gid, cred.Pid, nil
}

// processStart returns the start time of a process (field 22 of
// /proc/<pid>/stat, in clock ticks since boot): with the pid, it names
// one process for good.
func processStart(pid int32) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces and parentheses
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, errors.New("malformed /proc stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// processExe returns the path of a process's executable.
func processExe(pid int32) (string, error) {
	return os.Readlink("/proc/" + strconv.Itoa(int(pid)) + "/exe")
}
