package render

import (
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

func TestEgressRules(t *testing.T) {
	tests := []struct {
		name      string
		dests     []Destination
		wantRules int
		check     func(t *testing.T, rules string)
	}{
		{
			name: "public host opens its port to public addresses only", dests: []Destination{{"api.openai.com", 443}}, wantRules: 2,
			check: func(t *testing.T, r string) {
				for _, cidr := range []string{"10.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10", "fc00::/7", "172.16.0.0/12", "192.168.0.0/16"} {
					if !strings.Contains(r, cidr) {
						t.Errorf("public rule does not exclude %s", cidr)
					}
				}
			},
		},
		{
			name: "two public hosts on one port share a rule", dests: []Destination{{"a.example.com", 443}, {"b.example.com", 443}}, wantRules: 2,
		},
		{
			name: "in-cluster service gets a namespace selector", dests: []Destination{{"db.data.svc.cluster.local", 5432}}, wantRules: 2,
			check: func(t *testing.T, r string) {
				if !strings.Contains(r, "kubernetes.io/metadata.name: data") || strings.Contains(r, "0.0.0.0/0") {
					t.Errorf("in-cluster rule wrong: %s", r)
				}
			},
		},
		{
			name: "short in-cluster name", dests: []Destination{{"db.data.svc", 5432}}, wantRules: 2,
			check: func(t *testing.T, r string) {
				if !strings.Contains(r, "kubernetes.io/metadata.name: data") {
					t.Errorf("rule wrong: %s", r)
				}
			},
		},
		{
			name: "IP literal gets a /32", dests: []Destination{{"10.1.2.3", 9443}}, wantRules: 2,
			check: func(t *testing.T, r string) {
				if !strings.Contains(r, "10.1.2.3/32") {
					t.Errorf("rule wrong: %s", r)
				}
			},
		},
		{
			name: "IPv6 literal gets a /128", dests: []Destination{{"2001:db8::1", 443}}, wantRules: 2,
			check: func(t *testing.T, r string) {
				if !strings.Contains(r, "2001:db8::1/128") {
					t.Errorf("rule wrong: %s", r)
				}
			},
		},
		{name: "nothing but DNS", wantRules: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, allowed := EgressRules(tt.dests, "cluster.local")
			if len(rules) != tt.wantRules {
				t.Fatalf("got %d rules, want %d: %+v", len(rules), tt.wantRules, rules)
			}
			if allowed[0] != "dns:53" || len(allowed) != len(tt.dests)+1 {
				t.Errorf("allowed = %v", allowed)
			}
			if tt.check != nil {
				var b strings.Builder
				for _, r := range rules[1:] {
					b.WriteString(r.String())
				}
				tt.check(t, b.String())
			}
		})
	}
}

func TestDestinations(t *testing.T) {
	va := &v1alpha1.VoiceAgent{Spec: v1alpha1.VoiceAgentSpec{Model: v1alpha1.ModelSpec{
		ModelTarget: v1alpha1.ModelTarget{Provider: v1alpha1.ProviderAnthropic},
		Fallbacks:   []v1alpha1.ModelTarget{{Provider: v1alpha1.ProviderOpenAICompatible, Endpoint: "https://llm.internal.svc:8000/v1"}},
	}}}
	ds, err := Destinations(va, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, d := range ds {
		got = append(got, d.String())
	}
	want := "api.anthropic.com:443,llm.internal.svc:8000"
	if strings.Join(got, ",") != want {
		t.Errorf("destinations = %v, want %s", got, want)
	}
}

// TestAWSIPv6MetadataIsNeverPrivate: AWS's IPv6 metadata, resolver and time addresses
// sit inside fc00::/7; neither a database host nor the limit store may be one, and a
// user's private block that holds them leaves them out.
func TestAWSIPv6MetadataIsNeverPrivate(t *testing.T) {
	for _, ip := range []string{"fd00:ec2::254", "fd00:ec2::253", "fd00:ec2::123"} {
		if privateIP(ip) {
			t.Errorf("privateIP(%s) = true", ip)
		}
	}
	if !privateIP("fd00:ec3::254") {
		t.Error("privateIP(fd00:ec3::254) = false, want a plain private address")
	}
	b := withoutMetadata(&networkingv1.IPBlock{CIDR: "fd00::/8"})
	if len(b.Except) != 1 || b.Except[0] != "fd00:ec2::/112" {
		t.Errorf("fd00::/8 except %v, want fd00:ec2::/112", b.Except)
	}
}
