package api_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/node"
)

// TestNodeErrorCategories checks that every category of the node's own
// errors is translated to its status and code by api's one mapping, that the
// client sees the node's message, and that each category matches only the
// category it is meant to.
func TestNodeErrorCategories(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{node.ErrInvalid, http.StatusBadRequest, api.CodeInvalidArgument},
		{node.ErrNotFound, http.StatusNotFound, api.CodeNotFound},
		{node.ErrConflict, http.StatusConflict, api.CodeConflict},
		{node.ErrForbidden, http.StatusForbidden, api.CodePermissionDenied},
		{node.ErrSealed, http.StatusServiceUnavailable, api.CodeSealed},
		{node.ErrNotInitialized, http.StatusServiceUnavailable, api.CodeNotInitialized},
	}
	all := []error{api.ErrInvalid, api.ErrNotFound, api.ErrConflict, api.ErrForbidden, api.ErrNotInitialized, kms.ErrSealed,
		kms.ErrInvalid, kms.ErrNotFound, kms.ErrConflict, kms.ErrForbidden}
	for _, c := range cases {
		t.Run(c.code, func(t *testing.T) {
			if !strings.HasPrefix(c.err.Error(), "node: ") {
				t.Errorf("%q: want the prefix \"node: \"", c.err)
			}
			err := fmt.Errorf("doing a thing: %w: the detail", c.err)
			e := api.ToError(err)
			if e.Status != c.status || e.Code != c.code {
				t.Errorf("%v -> %d %s, want %d %s", c.err, e.Status, e.Code, c.status, c.code)
			}
			if e.Message != err.Error() {
				t.Errorf("message %q, want %q", e.Message, err.Error())
			}
			matched := 0
			for _, cat := range all {
				if errors.Is(err, cat) {
					matched++
				}
			}
			if matched != 1 {
				t.Errorf("%v matches %d categories, want exactly 1", c.err, matched)
			}
		})
	}
	// A node error that names no category stays internal and says nothing.
	if e := api.ToError(errors.New("node: something broke")); e.Status != http.StatusInternalServerError || e.Message != "internal error" {
		t.Errorf("uncategorised -> %d %q, want 500 \"internal error\"", e.Status, e.Message)
	}
}
