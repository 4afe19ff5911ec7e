package node

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSysKeysDeclared checks that the sys table takes only the keys
// sysRecords declares, and refuses any other before it reaches the store.
func TestSysKeysDeclared(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range sysRecords {
		if r.key == "" || r.owner == "" || r.purpose == "" {
			t.Errorf("record %q: key, owner and purpose are required", r.key)
		}
		if seen[r.key] {
			t.Errorf("record %q is declared twice", r.key)
		}
		seen[r.key] = true
	}
	for _, k := range []string{recClusterCA, recAuditKey, recStepPassword, joinKey("cjt_x"), apiURLPrefix + "node-1"} {
		if _, err := sysKey(k); err != nil {
			t.Errorf("declared key %q refused: %v", k, err)
		}
	}
	undeclared := []string{
		"", "sys", "other", "cluster-ca-cert/x", "audit-hmac-key2", "step-jwk-password ",
		joinPrefix, joinPrefix + "abc", joinPrefix + strings.Repeat("A", 64), joinKey("x") + "0",
		apiURLPrefix, apiURLPrefix + "Node_1", apiURLPrefix + "node-1/x", "x" + apiURLPrefix + "node-1",
	}
	// A zero sysTable has no barrier: were a key let through, the call
	// would panic instead of returning the error.
	var s sysTable
	ctx := context.Background()
	for _, k := range undeclared {
		if _, err := sysKey(k); err == nil {
			t.Errorf("undeclared key %q accepted", k)
		}
		if _, err := s.get(ctx, k); err == nil {
			t.Errorf("get %q: no error", k)
		}
		if err := s.put(ctx, k, []byte("v")); err == nil {
			t.Errorf("put %q: no error", k)
		}
		if _, _, err := s.createOnce(ctx, k, []byte("v")); err == nil {
			t.Errorf("createOnce %q: no error", k)
		}
		if _, err := s.deleteIf(ctx, k, []byte("v")); err == nil {
			t.Errorf("deleteIf %q: no error", k)
		}
	}
	for _, p := range []string{"", "sys", "join", "api-url", recClusterCA, "other/", "j"} {
		if _, err := s.listValues(ctx, p); err == nil {
			t.Errorf("listValues %q: no error", p)
		}
	}
}

// TestSysTableOnlyHere checks that no file but sysrecords.go names the sys
// table, its keys or its untyped access: every record goes through its
// owner's functions.
func TestSysTableOnlyHere(t *testing.T) {
	names := map[string]bool{
		"tableSys": true, "sysKey": true, "sysRecords": true, "joinKey": true,
		"recClusterCA": true, "recAuditKey": true, "recStepPassword": true, "joinPrefix": true, "apiURLPrefix": true,
	}
	untyped := map[string]bool{"get": true, "put": true, "createOnce": true, "deleteIf": true, "listValues": true, "b": true} // sysTable's
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if name == "sysrecords.go" || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(nd ast.Node) bool {
			switch x := nd.(type) {
			case *ast.Ident:
				if names[x.Name] {
					t.Errorf("%s: %s is sysrecords.go's", fset.Position(x.Pos()), x.Name)
				}
			case *ast.SelectorExpr:
				if call, ok := x.X.(*ast.CallExpr); ok {
					if fn, ok := call.Fun.(*ast.SelectorExpr); ok && fn.Sel.Name == "sys" && untyped[x.Sel.Name] {
						t.Errorf("%s: sys().%s: use the record's owner function", fset.Position(x.Pos()), x.Sel.Name)
					}
				}
			case *ast.BasicLit:
				if v, err := strconv.Unquote(x.Value); x.Kind == token.STRING && err == nil && v == tableSys {
					t.Errorf("%s: the sys table is named only in sysrecords.go", fset.Position(x.Pos()))
				}
			}
			return true
		})
	}
}
