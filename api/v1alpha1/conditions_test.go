package v1alpha1_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestReasonConstantsAreNamedForTheirValues reads conditions.go: every Reason constant is
// named Reason followed by its value, so that a reader of the code sees the string that
// tools match on, and no two reasons share a value. Every reason is also explained in the
// troubleshooting tables of docs/operations.md.
func TestReasonConstantsAreNamedForTheirValues(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "conditions.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range spec.Names {
			if !strings.HasPrefix(name.Name, "Reason") || i >= len(spec.Values) {
				continue
			}
			lit, ok := spec.Values[i].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Errorf("%s is not a string literal", name.Name)
				continue
			}
			value, _ := strconv.Unquote(lit.Value)
			if want := "Reason" + value; name.Name != want {
				t.Errorf("%s = %q: name it %s", name.Name, value, want)
			}
			if other, dup := seen[value]; dup {
				t.Errorf("%s and %s share the value %q", other, name.Name, value)
			}
			seen[value] = name.Name
			if !strings.Contains(string(docs), "| `"+value+"` |") {
				t.Errorf("reason %s is not explained in a table of docs/operations.md", value)
			}
		}
		return true
	})
	if len(seen) < 20 {
		t.Fatalf("found %d reasons in conditions.go: the scan is broken", len(seen))
	}
}
