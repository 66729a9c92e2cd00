// Command apidocs writes the API reference (docs/api-reference.md) from the generated
// CRDs in config/crd/bases, so that the reference says exactly what the API server
// enforces: every field path with its type, whether it is required, its default, its
// enum, pattern and bounds, its description, and the CEL rules with their messages.
//
// The output is deterministic (properties in name order, kinds in name order), so that
// `make verify-generated` can fail when the committed reference is stale.
//
//	go run ./hack/apidocs [-crds config/crd/bases] [-out docs/api-reference.md]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	crdDir := flag.String("crds", "config/crd/bases", "folder of the CRD YAML files")
	out := flag.String("out", "docs/api-reference.md", "the Markdown file to write")
	flag.Parse()
	if err := run(*crdDir, *out); err != nil {
		fmt.Fprintln(os.Stderr, "apidocs:", err)
		os.Exit(1)
	}
}

func run(crdDir, out string) error {
	crds, err := loadCRDs(crdDir)
	if err != nil {
		return err
	}
	doc, err := render(crdDir, crds)
	if err != nil {
		return err
	}
	return os.WriteFile(out, doc, 0o644)
}

// loadCRDs reads every *.yaml file of dir as one CustomResourceDefinition, sorted by kind.
func loadCRDs(dir string) ([]apiextensionsv1.CustomResourceDefinition, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no CRD files in %s", dir)
	}
	var crds []apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &crd); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if crd.Kind != "CustomResourceDefinition" {
			return nil, fmt.Errorf("%s: kind %q, want CustomResourceDefinition", f, crd.Kind)
		}
		crds = append(crds, crd)
	}
	sort.Slice(crds, func(i, j int) bool { return crds[i].Spec.Names.Kind < crds[j].Spec.Names.Kind })
	return crds, nil
}

// field is one row of a kind's field table.
type field struct {
	path        string
	typ         string
	required    bool
	def         string
	validation  []string
	description string
}

// rule is one CEL validation rule and the path of the object it is attached to.
type rule struct {
	path, rule, message string
}

// walker collects the fields and rules of one schema.
type walker struct {
	fields []field
	rules  []rule
}

// visit records the field at path (unless it is the root) and everything under it.
func (w *walker) visit(path string, s *apiextensionsv1.JSONSchemaProps, required bool) {
	if path != "" {
		w.fields = append(w.fields, field{
			path: path, typ: typeOf(s), required: required, def: defaultOf(s),
			validation: constraints(s), description: s.Description,
		})
	}
	w.children(path, s)
}

// children records the CEL rules of s and visits its properties, list items and map
// values. A list item is addressed as path[], a map value as path.*.
func (w *walker) children(path string, s *apiextensionsv1.JSONSchemaProps) {
	for _, v := range s.XValidations {
		msg := v.Message
		if msg == "" && v.MessageExpression != "" {
			msg = "(expression) " + v.MessageExpression
		}
		at := path
		if at == "" {
			at = "(the object)"
		}
		if v.FieldPath != "" {
			at += " → " + v.FieldPath
		}
		w.rules = append(w.rules, rule{path: at, rule: v.Rule, message: msg})
	}
	names := make([]string, 0, len(s.Properties))
	for n := range s.Properties {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		child := s.Properties[n]
		w.visit(join(path, n), &child, contains(s.Required, n))
	}
	if s.Items != nil && s.Items.Schema != nil {
		w.children(path+"[]", s.Items.Schema)
	}
	if ap := s.AdditionalProperties; ap != nil && ap.Schema != nil {
		w.children(path+".*", ap.Schema)
	}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// typeOf names a schema's type the way a Go or kubectl reader expects.
func typeOf(s *apiextensionsv1.JSONSchemaProps) string {
	switch {
	case s.XIntOrString:
		return "int-or-string"
	case s.Type == "array":
		if s.Items != nil && s.Items.Schema != nil {
			return "[]" + typeOf(s.Items.Schema)
		}
		return "[]any"
	case s.Type == "object" && s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil:
		return "map[string]" + typeOf(s.AdditionalProperties.Schema)
	case s.Type == "object" && len(s.Properties) == 0 && s.XPreserveUnknownFields != nil && *s.XPreserveUnknownFields:
		return "object (free-form)"
	case s.Type == "":
		return "any"
	case s.Format != "":
		return s.Type + " (" + s.Format + ")"
	}
	return s.Type
}

func defaultOf(s *apiextensionsv1.JSONSchemaProps) string {
	if s.Default == nil {
		return ""
	}
	return compactJSON(s.Default.Raw)
}

func compactJSON(raw []byte) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

// constraints lists what the API server checks on a field besides its type. Each
// entry is Markdown ready for a table cell.
func constraints(s *apiextensionsv1.JSONSchemaProps) []string {
	var out []string
	if len(s.Enum) > 0 {
		vals := make([]string, 0, len(s.Enum))
		for _, e := range s.Enum {
			v := compactJSON(e.Raw)
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			vals = append(vals, cellCode(v))
		}
		out = append(out, "enum: "+strings.Join(vals, ", "))
	}
	if s.Pattern != "" {
		out = append(out, "pattern: "+cellCode(s.Pattern))
	}
	if s.Minimum != nil {
		op := "≥"
		if s.ExclusiveMinimum {
			op = ">"
		}
		out = append(out, "value "+op+" "+number(*s.Minimum))
	}
	if s.Maximum != nil {
		op := "≤"
		if s.ExclusiveMaximum {
			op = "<"
		}
		out = append(out, "value "+op+" "+number(*s.Maximum))
	}
	if s.MultipleOf != nil {
		out = append(out, "multiple of "+number(*s.MultipleOf))
	}
	out = appendBounds(out, "length", s.MinLength, s.MaxLength)
	out = appendBounds(out, "items", s.MinItems, s.MaxItems)
	out = appendBounds(out, "properties", s.MinProperties, s.MaxProperties)
	if s.Items != nil && s.Items.Schema != nil {
		out = appendBounds(out, "each item's length", s.Items.Schema.MinLength, s.Items.Schema.MaxLength)
		if p := s.Items.Schema.Pattern; p != "" {
			out = append(out, "each item's pattern: "+cellCode(p))
		}
	}
	if ap := s.AdditionalProperties; ap != nil && ap.Schema != nil && ap.Schema.Pattern != "" {
		out = append(out, "each value's pattern: "+cellCode(ap.Schema.Pattern))
	}
	if s.UniqueItems {
		out = append(out, "unique items")
	}
	if s.XListType != nil {
		lt := "list type: " + *s.XListType
		if len(s.XListMapKeys) > 0 {
			keys := make([]string, len(s.XListMapKeys))
			for i, k := range s.XListMapKeys {
				keys[i] = cellCode(k)
			}
			lt += " (unique by " + strings.Join(keys, ", ") + ")"
		}
		out = append(out, lt)
	}
	if s.XMapType != nil {
		out = append(out, "map type: "+*s.XMapType)
	}
	if s.Nullable {
		out = append(out, "nullable")
	}
	if s.XPreserveUnknownFields != nil && *s.XPreserveUnknownFields {
		out = append(out, "unknown fields kept")
	}
	if s.XEmbeddedResource {
		out = append(out, "embedded resource")
	}
	if n := len(s.XValidations); n > 0 {
		out = append(out, fmt.Sprintf("CEL: %d rule(s), see below", n))
	}
	return out
}

func appendBounds(out []string, what string, min, max *int64) []string {
	switch {
	case min != nil && max != nil:
		return append(out, fmt.Sprintf("%s %d–%d", what, *min, *max))
	case min != nil:
		return append(out, fmt.Sprintf("%s ≥ %d", what, *min))
	case max != nil:
		return append(out, fmt.Sprintf("%s ≤ %d", what, *max))
	}
	return out
}

func number(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// cellCode formats s as a Markdown code span inside a table cell, where a pipe must be
// escaped even in a code span (GitHub Flavored Markdown splits cells first).
func cellCode(s string) string { return code(strings.ReplaceAll(s, "|", `\|`)) }

// code formats s as a Markdown code span outside tables.
func code(s string) string {
	fence := "`"
	for strings.Contains(s, fence) {
		fence += "`"
	}
	pad := ""
	if len(fence) > 1 || strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		pad = " "
	}
	return fence + pad + s + pad + fence
}

// text makes free text safe for a table cell or a list item: one line, no raw HTML,
// no accidental emphasis, no column breaks.
var textEscaper = strings.NewReplacer(`\`, `\\`, "|", `\|`, "<", "&lt;", ">", "&gt;", "*", `\*`)

func text(s string) string { return textEscaper.Replace(strings.Join(strings.Fields(s), " ")) }

// anchor is the GitHub heading anchor of a heading made of plain words.
func anchor(heading string) string {
	return strings.ToLower(strings.ReplaceAll(heading, " ", "-"))
}

func render(crdDir string, crds []apiextensionsv1.CustomResourceDefinition) ([]byte, error) {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }

	p("# API reference\n\n")
	p("<!-- Generated by hack/apidocs from %s. Do not edit: run `make api-docs`. -->\n\n", filepath.ToSlash(crdDir))
	p("This reference is generated from the CustomResourceDefinitions the API server enforces\n")
	p("(`%s/*.yaml`, themselves generated from the Go types in `api/v1alpha1`), so it lists\n", filepath.ToSlash(crdDir))
	p("exactly what admission accepts. How to read it:\n\n")
	p("- **Field** is the path from the object's root. `[]` stands for every item of a list,\n")
	p("  `.*` for every value of a map.\n")
	p("- **Required** means required whenever the object that contains the field is present;\n")
	p("  a required field inside an optional object is only required when that object is set.\n")
	p("- **Default** is applied by the API server when the field is omitted, so Argo CD and Flux\n")
	p("  see no difference between what they applied and what is stored.\n")
	p("- **Validation** lists enum values, patterns (RE2 syntax), bounds and list semantics.\n")
	p("  Rules that relate several fields are CEL expressions; each kind lists them with the\n")
	p("  message a user sees when a rule fails.\n")
	p("- Fields of embedded Kubernetes types (`resources`, `network.allowIngressFrom`, …) are\n")
	p("  listed in full with their upstream descriptions.\n\n")

	for _, crd := range crds {
		for _, v := range crd.Spec.Versions {
			heading := crd.Spec.Names.Kind + " " + v.Name
			p("- [%s](#%s)\n", heading, anchor(heading))
		}
	}
	p("\n")

	for _, crd := range crds {
		for _, v := range crd.Spec.Versions {
			if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
				return nil, fmt.Errorf("%s %s has no schema", crd.Name, v.Name)
			}
			renderVersion(&b, &crd, &v)
		}
	}
	return []byte(b.String()), nil
}

func renderVersion(b *strings.Builder, crd *apiextensionsv1.CustomResourceDefinition, v *apiextensionsv1.CustomResourceDefinitionVersion) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	names := crd.Spec.Names
	root := v.Schema.OpenAPIV3Schema

	p("## %s %s\n\n", names.Kind, v.Name)
	if root.Description != "" {
		p("%s\n\n", text(root.Description))
	}
	p("| | |\n|---|---|\n")
	p("| apiVersion | %s |\n", cellCode(crd.Spec.Group+"/"+v.Name))
	p("| kind | %s |\n", cellCode(names.Kind))
	p("| scope | %s |\n", crd.Spec.Scope)
	p("| plural | %s |\n", cellCode(names.Plural))
	if len(names.ShortNames) > 0 {
		p("| short names | %s |\n", codes(names.ShortNames))
	}
	if len(names.Categories) > 0 {
		p("| categories | %s |\n", codes(names.Categories))
	}
	p("| served / storage | %t / %t |\n", v.Served, v.Storage)
	if v.Subresources != nil && v.Subresources.Status != nil {
		p("| subresources | status |\n")
	}
	if v.Deprecated {
		p("| deprecated | %s |\n", text(deref(v.DeprecationWarning)))
	}
	p("\n")

	if len(v.AdditionalPrinterColumns) > 0 {
		p("Columns of `kubectl get %s`:\n\n", names.Plural)
		p("| Column | Type | JSONPath |\n|---|---|---|\n")
		for _, c := range v.AdditionalPrinterColumns {
			p("| %s | %s | %s |\n", text(c.Name), c.Type, cellCode(c.JSONPath))
		}
		p("\n")
	}

	w := &walker{}
	w.visit("", root, false)

	if len(w.rules) > 0 {
		p("### %s validation rules (CEL)\n\n", names.Kind)
		p("Checked by the API server on create and update; the message is what `kubectl`\n")
		p("prints when a rule fails.\n\n")
		for _, r := range w.rules {
			p("- On %s: %s\n", code(r.path), text(r.message))
			p("  - rule: %s\n", code(r.rule))
		}
		p("\n")
	}

	// One table for the top level, then one per top-level object (spec, status), so
	// that a reader looking for a spec field does not scroll through status.
	groups := map[string][]field{}
	var order []string
	for _, f := range w.fields {
		g := ""
		if i := strings.IndexAny(f.path, ".["); i > 0 {
			g = f.path[:i]
		}
		if _, ok := groups[g]; !ok {
			order = append(order, g)
		}
		groups[g] = append(groups[g], f)
	}
	for _, g := range order {
		if g == "" {
			p("### %s top-level fields\n\n", names.Kind)
		} else {
			p("### %s %s\n\n", names.Kind, g)
		}
		p("| Field | Type | Required | Default | Validation | Description |\n")
		p("|---|---|---|---|---|---|\n")
		for _, f := range groups[g] {
			req := ""
			if f.required {
				req = "yes"
			}
			def := ""
			if f.def != "" {
				def = cellCode(f.def)
			}
			p("| %s | %s | %s | %s | %s | %s |\n", cellCode(f.path), cellCode(f.typ), req, def,
				strings.Join(f.validation, "<br>"), text(f.description))
		}
		p("\n")
	}
}

func codes(list []string) string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = cellCode(s)
	}
	return strings.Join(out, ", ")
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
