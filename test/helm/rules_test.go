package helm_test

import (
	"encoding/json"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// configRules reads spec.groups of config/prometheus/rules.yaml, the kustomize rendering.
func configRules(t *testing.T) []any {
	t.Helper()
	var pr map[string]any
	readYAML(t, repoPath("config", "prometheus", "rules.yaml"), &pr)
	groups, ok, err := unstructured.NestedSlice(pr, "spec", "groups")
	if !ok || err != nil || len(groups) == 0 {
		t.Fatalf("config/prometheus/rules.yaml has no spec.groups (%v)", err)
	}
	return groups
}

// normalise round-trips through JSON so that both sides have the same Go types.
func normalise(t *testing.T, v any) any {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// expectedRules applies disabledAlerts and additionalRuleLabels to the config groups the
// way values.yaml documents them: disabled alerts left out, empty groups left out, the
// extra labels added to every alert, an alert's own labels winning.
func expectedRules(t *testing.T, groups []any, v values) []any {
	t.Helper()
	disabled := v.strList("prometheusRule.disabledAlerts")
	extra := v.strMap("prometheusRule.additionalRuleLabels")
	var out []any
	for _, g := range normalise(t, groups).([]any) {
		group := g.(map[string]any)
		var rules []any
		for _, r := range group["rules"].([]any) {
			rule := r.(map[string]any)
			if slices.Contains(disabled, rule["alert"].(string)) {
				continue
			}
			if len(extra) > 0 {
				l, _ := rule["labels"].(map[string]any)
				merged := map[string]any{}
				for k, x := range extra {
					merged[k] = x
				}
				for k, x := range l {
					merged[k] = x
				}
				rule["labels"] = merged
			}
			rules = append(rules, rule)
		}
		if len(rules) > 0 {
			group["rules"] = rules
			out = append(out, group)
		}
	}
	return out
}

// TestChartAlertsAreTheConfigAlerts: the PrometheusRule the chart renders has the same
// groups as config/prometheus/rules.yaml with the default settings, and exactly the
// documented changes with disabledAlerts and additionalRuleLabels.
func TestChartAlertsAreTheConfigAlerts(t *testing.T) {
	cfg := configRules(t)
	for _, tc := range []struct {
		name   string
		values []string
		sets   []string
	}{
		{name: "enabled, defaults", sets: []string{"prometheusRule.enabled=true"}},
		{name: "all options", values: []string{"testdata/all-options.yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := loadValues(t, tc.values...)
			objs := helmTemplate(t, "rules", tc.values, tc.sets...)
			got, _, _ := unstructured.NestedSlice(find(t, objs, "PrometheusRule").Object, "spec", "groups")
			want := expectedRules(t, cfg, v)
			if len(v.strList("prometheusRule.disabledAlerts")) == 0 && len(v.strMap("prometheusRule.additionalRuleLabels")) == 0 &&
				!equality.Semantic.DeepEqual(normalise(t, cfg), want) {
				t.Fatal("expectedRules changed the rules without any option set")
			}
			if !equality.Semantic.DeepEqual(normalise(t, got), want) {
				gj, _ := json.MarshalIndent(got, "", " ")
				wj, _ := json.MarshalIndent(want, "", " ")
				t.Fatalf("chart rules differ from config/prometheus/rules.yaml:\n got %s\nwant %s", gj, wj)
			}
		})
	}
}

// TestSchemaListsEveryAlert: prometheusRule.disabledAlerts accepts exactly the alert names
// of config/prometheus/rules.yaml, so the schema cannot go stale when an alert is added
// or renamed.
func TestSchemaListsEveryAlert(t *testing.T) {
	var names []string
	for _, g := range configRules(t) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			names = append(names, r.(map[string]any)["alert"].(string))
		}
	}
	var schema struct {
		Properties struct {
			PrometheusRule struct {
				Properties struct {
					DisabledAlerts struct {
						Items struct {
							Enum []string `json:"enum"`
						} `json:"items"`
					} `json:"disabledAlerts"`
				} `json:"properties"`
			} `json:"prometheusRule"`
		} `json:"properties"`
	}
	readYAML(t, chartDir+"/values.schema.json", &schema)
	enum := schema.Properties.PrometheusRule.Properties.DisabledAlerts.Items.Enum
	slices.Sort(names)
	slices.Sort(enum)
	if len(names) == 0 || !slices.Equal(names, enum) {
		t.Fatalf("schema enum %v, alerts %v", enum, names)
	}
}
