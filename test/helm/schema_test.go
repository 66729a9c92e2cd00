package helm_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const schemaFailure = "values don't meet the specifications of the schema"

// TestBadValuesAreRejectedBySchema renders the chart with each file of testdata/bad: each
// must fail in values.schema.json (not in a template), with the message fragment its
// first line names (`# expect: <fragment>`).
func TestBadValuesAreRejectedBySchema(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 8 {
		t.Fatalf("the corpus has %d files, want at least 8", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			fragment, ok := strings.CutPrefix(first, "# expect: ")
			if !ok || strings.TrimSpace(fragment) == "" {
				t.Fatalf("first line %q: want `# expect: <message fragment>`", first)
			}
			out, err := helm("template", releaseName, chartDir, "--namespace", "bad", "--values", f)
			if err == nil {
				t.Fatalf("accepted; rendered:\n%s", out)
			}
			msg := err.Error()
			if !strings.Contains(msg, schemaFailure) {
				t.Fatalf("refused, but not by the schema:\n%s", msg)
			}
			if !strings.Contains(msg, fragment) {
				t.Fatalf("the schema error does not contain %q:\n%s", fragment, msg)
			}
		})
	}
}

// TestGoodValuesPassTheSchema is the control for the corpus: the files the other tests
// render are accepted, so a schema that refuses everything cannot pass.
func TestGoodValuesPassTheSchema(t *testing.T) {
	for _, tc := range renderCases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"template", releaseName, chartDir, "--namespace", "good"}
			for _, f := range tc.values {
				args = append(args, "--values", f)
			}
			if _, err := helm(args...); err != nil {
				t.Fatal(err)
			}
		})
	}
}
