package helm_test

import (
	"strings"
	"testing"
)

// lintAllowed are the only messages `helm lint` may print. The chart has no icon: there
// is no hosted image to point at, and a made-up URL would be worse than none.
var lintAllowed = []string{"[INFO] Chart.yaml: icon is recommended"}

// TestChartLintsClean runs `helm lint --strict` (warnings fail) with the default values
// and with every option set, and allows no message beyond lintAllowed.
func TestChartLintsClean(t *testing.T) {
	for _, tc := range renderCases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir}
			for _, f := range tc.values {
				args = append(args, "--values", f)
			}
			out, err := helm(args...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
				t.Fatalf("unexpected lint result:\n%s", out)
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "[") && !contains(lintAllowed, line) {
					t.Errorf("lint: %s", line)
				}
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
