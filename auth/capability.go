package auth

import (
	"fmt"
	"strings"
)

// Capability is a set of operations a policy rule grants on a path.
type Capability uint8

// Capabilities. Deny is not an operation: on a rule it refuses everything.
const (
	CapCreate Capability = 1 << iota
	CapRead
	CapUpdate
	CapDelete
	CapList
	CapSudo
	CapDeny

	capAll = CapCreate | CapRead | CapUpdate | CapDelete | CapList | CapSudo
)

var capNames = []struct {
	c    Capability
	name string
}{
	{CapCreate, "create"}, {CapRead, "read"}, {CapUpdate, "update"}, {CapDelete, "delete"},
	{CapList, "list"}, {CapSudo, "sudo"}, {CapDeny, "deny"},
}

// ParseCapability returns the capability named s ("read", "deny", ...).
func ParseCapability(s string) (Capability, error) {
	for _, n := range capNames {
		if n.name == s {
			return n.c, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown capability %q (want one of create, read, update, delete, list, sudo, deny)", ErrInvalid, truncate(s, 32))
}

// Names lists the capabilities in the set, in a fixed order.
func (c Capability) Names() []string {
	var out []string
	for _, n := range capNames {
		if c&n.c != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

func (c Capability) String() string { return strings.Join(c.Names(), ",") }
