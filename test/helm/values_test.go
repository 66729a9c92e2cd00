package helm_test

import (
	"fmt"
	"strings"
	"testing"
)

// values are the chart's values.yaml with the given files merged over it the way helm
// merges them (maps deeply, everything else replaced, null deletes), so that the tests
// derive what they expect from the same inputs helm gets instead of hard-coding it.
type values map[string]any

func loadValues(t *testing.T, files ...string) values {
	t.Helper()
	base := map[string]any{}
	readYAML(t, chartDir+"/values.yaml", &base)
	for _, f := range files {
		over := map[string]any{}
		readYAML(t, f, &over)
		merge(base, over)
	}
	return base
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sok := v.(map[string]any)
		dm, dok := dst[k].(map[string]any)
		if sok && dok {
			merge(dm, sm)
			continue
		}
		dst[k] = v
	}
}

// get returns the value at a dotted path, or nil.
func (v values) get(path string) any {
	var cur any = map[string]any(v)
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func (v values) str(path string) string {
	if x := v.get(path); x != nil {
		return fmt.Sprint(x)
	}
	return ""
}

func (v values) boolean(path string) bool { b, _ := v.get(path).(bool); return b }

func (v values) strMap(path string) map[string]string {
	out := map[string]string{}
	m, _ := v.get(path).(map[string]any)
	for k, x := range m {
		out[k] = fmt.Sprint(x)
	}
	return out
}

func (v values) list(path string) []any { l, _ := v.get(path).([]any); return l }

func (v values) strList(path string) []string {
	var out []string
	l, _ := v.get(path).([]any)
	for _, x := range l {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// imageRef is repository:tag[@digest], the tag defaulting to the chart's appVersion.
func imageRef(v values, prefix, appVersion string) string {
	tag := v.str(prefix + ".tag")
	if tag == "" {
		tag = appVersion
	}
	ref := v.str(prefix+".repository") + ":" + tag
	if d := v.str(prefix + ".digest"); d != "" {
		ref += "@" + d
	}
	return ref
}

// fullname mirrors the chart's naming rule: fullnameOverride, else release-name, else
// the release name when it already contains the name.
func fullname(v values) string {
	if f := v.str("fullnameOverride"); f != "" {
		return f
	}
	name := v.str("nameOverride")
	if name == "" {
		name = chartName
	}
	if strings.Contains(releaseName, name) {
		return releaseName
	}
	return releaseName + "-" + name
}

const chartName = "voiceagent-operator"
