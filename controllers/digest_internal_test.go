package controllers

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestProjectKeepsWhatTheFieldSetNames(t *testing.T) {
	tests := []struct {
		name            string
		live, set, want string
	}{
		{"fields, leaves whole", `{"a":1,"b":{"c":2,"d":3},"e":{"x":1}}`, `{"f:b":{"f:c":{}},"f:e":{}}`, `{"b":{"c":2},"e":{"x":1}}`},
		{"keyed items, in live order, by string and number keys",
			`{"l":[{"name":"x","v":1,"d":"default"},{"name":"y","v":2},{"name":"z","v":3}]}`,
			`{"f:l":{"k:{\"name\":\"z\"}":{".":{},"f:name":{},"f:v":{}},"k:{\"name\":\"x\"}":{".":{},"f:name":{},"f:v":{}}}}`,
			`{"l":[{"name":"x","v":1},{"name":"z","v":3}]}`},
		{"number keys", `{"p":[{"port":80,"protocol":"TCP","x":1},{"port":81,"protocol":"TCP"}]}`,
			`{"f:p":{"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:port":{},"f:protocol":{}}}}`, `{"p":[{"port":80,"protocol":"TCP"}]}`},
		{"set items by value", `{"s":["a","b","c"]}`, `{"f:s":{"v:\"a\"":{},"v:\"c\"":{}}}`, `{"s":["a","c"]}`},
		{"a field owned by someone else is not there", `{"a":1,"b":2}`, `{"f:a":{}}`, `{"a":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var live, set, want map[string]any
			for _, p := range []struct {
				s string
				v *map[string]any
			}{{tt.live, &live}, {tt.set, &set}, {tt.want, &want}} {
				if err := json.Unmarshal([]byte(p.s), p.v); err != nil {
					t.Fatal(err)
				}
			}
			intsOf(live)
			got := project(live, set)
			b, _ := json.Marshal(got)
			var back map[string]any
			_ = json.Unmarshal(b, &back)
			if !reflect.DeepEqual(back, want) {
				t.Errorf("project = %s, want %s", b, tt.want)
			}
		})
	}
}

// intsOf makes the numbers of a decoded JSON value int64, as the unstructured
// converter gives them.
func intsOf(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = intsOf(e)
		}
	case []any:
		for i, e := range x {
			x[i] = intsOf(e)
		}
	case float64:
		return int64(x)
	}
	return v
}
