// Package promrules checks the operator's Prometheus alerts with Prometheus' own code: the
// rule-file loader (model/rulefmt, what Prometheus and promtool run: expressions, `for`,
// label names, annotation templates) and the PromQL parser, and checks that every metric
// and label an alert uses is one the code really exports. It also decodes the chart's
// ServiceMonitor, PodMonitor and PrometheusRule strictly into the Prometheus Operator's
// Go types. It is a module of its own because Prometheus' module would raise the main
// module's go directive and several of its dependencies (client_golang, zap, client-go).
package promrules

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

func repoPath(p ...string) string { return filepath.Join(append([]string{"..", ".."}, p...)...) }

var chartDir = repoPath("charts", "voiceagent-operator")

// rendering is one source of the alerts: the kustomize file or a chart rendering.
type rendering struct {
	name   string
	groups []byte // YAML of {groups: [...]}, a Prometheus rule file
}

func renderings(t *testing.T) []rendering {
	t.Helper()
	var out []rendering
	var pr map[string]any
	readYAML(t, repoPath("config", "prometheus", "rules.yaml"), &pr)
	out = append(out, rendering{"config/prometheus/rules.yaml", ruleFile(t, pr)})
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"chart, prometheusRule.enabled", []string{"--set", "prometheusRule.enabled=true"}},
		{"chart, all options", []string{"--values", repoPath("test", "helm", "testdata", "all-options.yaml")}},
	} {
		obj := chartObject(t, "PrometheusRule", tc.args...)
		out = append(out, rendering{tc.name, ruleFile(t, obj)})
	}
	return out
}

func ruleFile(t *testing.T, pr map[string]any) []byte {
	t.Helper()
	spec, _ := pr["spec"].(map[string]any)
	data, err := yaml.Marshal(map[string]any{"groups": spec["groups"]})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestAlertsLoadInPrometheus loads each rendering the way Prometheus loads a rule file,
// with unknown fields refused.
func TestAlertsLoadInPrometheus(t *testing.T) {
	p := parser.NewParser(parser.Options{})
	for _, r := range renderings(t) {
		t.Run(r.name, func(t *testing.T) {
			groups, errs := rulefmt.Parse(r.groups, false, model.UTF8Validation, p, slog.New(slog.NewTextHandler(io.Discard, nil)))
			for _, err := range errs {
				t.Errorf("Prometheus refuses the rules: %v", err)
			}
			if groups == nil || len(groups.Groups) == 0 {
				t.Fatal("no rule groups")
			}
			for _, g := range groups.Groups {
				for _, rule := range g.Rules {
					if rule.Alert == "" {
						t.Errorf("group %s: a recording rule (%s); only alerts are expected", g.Name, rule.Record)
					}
					if s := rule.Labels["severity"]; s != "warning" && s != "critical" {
						t.Errorf("%s: severity %q, want warning or critical", rule.Alert, s)
					}
					if rule.Annotations["summary"] == "" || rule.Annotations["description"] == "" {
						t.Errorf("%s: summary and description annotations are required", rule.Alert)
					}
				}
			}
		})
	}
}

// TestAlertsUseRealMetricsAndLabels parses every expression and checks that each metric
// it selects is defined in the code (the gateway, the audit trail, the operator, or
// controller-runtime), and that each label it matches or groups by is one of that
// metric's labels or one Prometheus adds when it scrapes.
func TestAlertsUseRealMetricsAndLabels(t *testing.T) {
	metrics := definedMetrics(t)
	p := parser.NewParser(parser.Options{})
	var pr map[string]any
	readYAML(t, repoPath("config", "prometheus", "rules.yaml"), &pr)
	file, errs := rulefmt.Parse(ruleFile(t, pr), false, model.UTF8Validation, p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if len(errs) > 0 {
		t.Fatalf("Prometheus refuses config/prometheus/rules.yaml: %v", errs)
	}
	for _, g := range file.Groups {
		for _, rule := range g.Rules {
			t.Run(rule.Alert, func(t *testing.T) {
				expr, err := p.ParseExpr(rule.Expr)
				if err != nil {
					t.Fatalf("%q: %v", rule.Expr, err)
				}
				used := map[string]bool{}
				for _, sel := range parser.ExtractSelectors(expr) {
					name := ""
					for _, m := range sel {
						if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
							name = m.Value
						}
					}
					known, ok := metrics[name]
					if !ok {
						t.Errorf("metric %q is not defined in the code (defined: %v)", name, keys(metrics))
						continue
					}
					used[name] = true
					for _, m := range sel {
						if m.Name != model.MetricNameLabel && !known[m.Name] && !targetLabels[m.Name] {
							t.Errorf("%s has no label %q (it has %v)", name, m.Name, keys(known))
						}
					}
				}
				if len(used) == 0 {
					t.Fatal("the expression selects no metric")
				}
				parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
					agg, ok := node.(*parser.AggregateExpr)
					if !ok {
						return nil
					}
					for _, l := range agg.Grouping {
						if targetLabels[l] {
							continue
						}
						for _, sel := range parser.ExtractSelectors(agg.Expr) {
							for _, m := range sel {
								if m.Name == model.MetricNameLabel && !metrics[m.Value][l] {
									t.Errorf("grouping by %q, which %s does not have", l, m.Value)
								}
							}
						}
					}
					return nil
				})
			})
		}
	}
}

// targetLabels are added by Prometheus' Kubernetes discovery as the Prometheus Operator
// configures it, plus `voiceagent`, which the chart's gateway PodMonitor copies from the
// pod label app.kubernetes.io/instance (test/helm checks that relabeling).
var targetLabels = map[string]bool{
	"namespace": true, "pod": true, "container": true, "service": true, "endpoint": true,
	"instance": true, "job": true, "voiceagent": true,
}

var (
	nameRe   = regexp.MustCompile(`Name:\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"`)
	descRe   = regexp.MustCompile(`NewDesc\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"`)
	labelsRe = regexp.MustCompile(`\[\]string\{([^}]*)\}`)
	// Names of the metrics this project and controller-runtime define; the pattern leaves
	// out other Name fields in the same sources (environment variables and the like).
	metricNameRe = regexp.MustCompile(`^[a-z]+(_[a-z0-9]+)+$`)
)

// definedMetrics maps every metric name defined in the project's Go code and in
// controller-runtime's reconcile metrics to its label names.
func definedMetrics(t *testing.T) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	var files []string
	for _, dir := range []string{"internal", "controllers", "cmd"} {
		err := filepath.WalkDir(repoPath(dir), func(path string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
				files = append(files, path)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	files = append(files, filepath.Join(moduleDir(t, "sigs.k8s.io/controller-runtime"), "pkg", "internal", "controller", "metrics", "metrics.go"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src := string(data)
		for _, re := range []*regexp.Regexp{nameRe, descRe} {
			locs := re.FindAllStringSubmatchIndex(src, -1)
			for i, loc := range locs {
				name := src[loc[2]:loc[3]]
				// The labels are the first []string{...} after the name and before the
				// next definition.
				end := len(src)
				if i+1 < len(locs) {
					end = locs[i+1][0]
				}
				ls := map[string]bool{}
				if m := labelsRe.FindStringSubmatch(src[loc[1]:end]); m != nil {
					for _, l := range strings.Split(m[1], ",") {
						if l = strings.Trim(strings.TrimSpace(l), `"`); l != "" {
							ls[l] = true
						}
					}
				}
				if metricNameRe.MatchString(name) {
					out[name] = ls
				}
			}
		}
	}
	for _, want := range []string{"voiceagent_gateway_budget_exceeded", "voiceagent_operator_voiceagents", "controller_runtime_reconcile_errors_total"} {
		if out[want] == nil {
			t.Fatalf("found no definition of %s: the source scan is broken (found %v)", want, keys(out))
		}
	}
	return out
}

// moduleDir is the directory of a dependency of the main module, at its version there.
func moduleDir(t *testing.T, mod string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", mod)
	cmd.Dir = repoPath()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", mod, err)
	}
	var info struct{ Dir string }
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		t.Fatalf("go mod download %s: %s (%v)", mod, out, err)
	}
	return info.Dir
}

// TestMonitoringObjectsDecodeStrictly decodes the chart's ServiceMonitor, PodMonitor and
// PrometheusRule into the Prometheus Operator's Go types, refusing unknown fields, since
// the API server of test/helm has no CRDs for them.
func TestMonitoringObjectsDecodeStrictly(t *testing.T) {
	args := []string{"--values", repoPath("test", "helm", "testdata", "all-options.yaml")}
	for kind, into := range map[string]any{
		"ServiceMonitor": &monitoringv1.ServiceMonitor{},
		"PodMonitor":     &monitoringv1.PodMonitor{},
		"PrometheusRule": &monitoringv1.PrometheusRule{},
	} {
		t.Run(kind, func(t *testing.T) {
			data, err := yaml.Marshal(chartObject(t, kind, args...))
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.UnmarshalStrict(data, into); err != nil {
				t.Fatalf("%s: %v\n%s", kind, err, data)
			}
		})
	}
}

// chartObject renders the chart and returns its one object of kind.
func chartObject(t *testing.T, kind string, args ...string) map[string]any {
	t.Helper()
	helmBin := os.Getenv("HELM")
	if helmBin == "" {
		helmBin = repoPath("bin", "helm")
	}
	cmd := exec.Command(helmBin, append([]string{"template", "vao", chartDir, "--namespace", "monitoring"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm template (run `make test`, which builds bin/helm): %v\n%s", err, stderr.String())
	}
	var found []map[string]any
	for _, doc := range strings.Split(stdout.String(), "\n---") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		if obj["kind"] == kind {
			found = append(found, obj)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s, got %d", kind, len(found))
	}
	return found[0]
}

func readYAML(t *testing.T, path string, out any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
