//go:build !linux

package workload

import (
	"errors"
	"net"
)

var errUnsupported = errors.New("workload: peer credentials are supported on Linux only")

func peerCred(net.Conn) (uid, gid uint32, pid int32, err error) { return 0, 0, 0, errUnsupported }
func processStart(int32) (uint64, error)                        { return 0, errUnsupported }
func processExe(int32) (string, error)                          { return "", errUnsupported }
