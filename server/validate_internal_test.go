package server

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestEveryStringFieldIsText keeps the one rule for strings from requests:
// every string field of a params struct (a field with a `validate` tag) in
// this package carries the "text" tag, so no string reaches PostgreSQL
// without being checked for NUL and invalid UTF-8. A new params struct that
// forgets it fails here, before a client finds it.
func TestEveryStringFieldIsText(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	seen := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			st, ok := n.(*ast.StructType)
			if !ok {
				return true
			}
			for _, field := range st.Fields.List {
				if field.Tag == nil || !isStringType(field.Type) {
					continue
				}
				raw, err := strconv.Unquote(field.Tag.Value)
				if err != nil {
					t.Fatal(err)
				}
				tags, ok := reflect.StructTag(raw).Lookup("validate")
				if !ok {
					continue
				}
				seen++
				if !slices.Contains(strings.Split(tags, ","), "text") {
					t.Errorf("%s: string field %s has validate:%q without the \"text\" tag",
						fset.Position(field.Pos()), field.Names[0].Name, tags)
				}
			}
			return true
		})
	}
	if seen < 20 {
		t.Fatalf("found only %d validated string fields: is the test reading this package?", seen)
	}
}

// isStringType reports string, *string and []string.
func isStringType(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name == "string"
	case *ast.StarExpr:
		return isStringType(e.X)
	case *ast.ArrayType:
		return isStringType(e.Elt)
	}
	return false
}

// TestTextTag: the "text" tag refuses NUL and invalid UTF-8 and nothing else.
func TestTextTag(t *testing.T) {
	t.Parallel()
	type p struct {
		S *string `name:"s" validate:"omitnil,text"`
	}
	for s, ok := range map[string]bool{
		"": true, "héllo 名": true, "tab\tand\nnewline": true,
		"a\x00b": false, "\x00": false, "bad \xff utf-8": false,
	} {
		err := check(p{S: &s})
		if (err == nil) != ok {
			t.Errorf("%q: err %v, want ok=%v", s, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "s: must be valid UTF-8 without NUL") {
			t.Errorf("%q: message %q", s, err)
		}
	}
	if err := check(p{}); err != nil {
		t.Errorf("nil: %v", err)
	}
}
