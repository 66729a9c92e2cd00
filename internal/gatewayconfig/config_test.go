package gatewayconfig

import (
	"strings"
	"testing"
	"time"
)

func validConfig() *Config {
	return &Config{
		Version: ContentsVersion, VoiceAgent: "a", Namespace: "n", Replicas: 1,
		Listen:  Listen{Proxy: "127.0.0.1:15001", Admin: ":15020"},
		Models:  []Model{{Provider: "openai", Name: "m", Endpoint: "https://api.openai.com/v1", Timeout: Duration{Duration: time.Second}, CredentialFile: "/k"}},
		Breaker: Breaker{FailureThreshold: 1, OpenDuration: Duration{Duration: time.Second}},
		Audit:   Audit{FailurePolicy: "FailClosed"},
	}
}

func TestValidateNamesTheField(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"valid", func(*Config) {}, ""},
		{"proxy not loopback", func(c *Config) { c.Listen.Proxy = "0.0.0.0:15001" }, "listen.proxy"},
		{"proxy on every address without agentAuth", func(c *Config) { c.Listen.Proxy = ":15001" },
			"listen.proxy :15001 is not loopback: set agentAuth.tokenFile so that only the agent can call it"},
		{"proxy on a pod address without agentAuth", func(c *Config) { c.Listen.Proxy = "10.1.2.3:15001" }, "listen.proxy 10.1.2.3:15001 is not loopback"},
		{"proxy named localhost without agentAuth", func(c *Config) { c.Listen.Proxy = "localhost:15001" }, "listen.proxy localhost:15001 is not loopback"},
		{"proxy without port", func(c *Config) { c.Listen.Proxy = "127.0.0.1" }, "listen.proxy: \"127.0.0.1\" is not a host:port"},
		{"proxy on every address with agentAuth", func(c *Config) {
			c.Listen.Proxy = ":15001"
			c.AgentAuth = &AgentAuth{TokenFile: AgentTokenFile}
		}, ""},
		{"proxy on loopback v6", func(c *Config) { c.Listen.Proxy = "[::1]:15001" }, ""},
		{"agentAuth without token file", func(c *Config) {
			c.Listen.Proxy = ":15001"
			c.AgentAuth = &AgentAuth{}
		}, "agentAuth.tokenFile: required"},
		{"negative grace", func(c *Config) {
			c.AgentAuth = &AgentAuth{TokenFile: AgentTokenFile, PreviousTokenGrace: Duration{Duration: -time.Second}}
		}, "agentAuth.previousTokenGrace"},
		{"proxy TLS without key", func(c *Config) { c.Listen.ProxyTLS = &TLSFiles{CertFile: ProxyTLSDir + "/tls.crt"} }, "listen.proxyTLS"},
		{"no model", func(c *Config) { c.Models = nil }, "models: at least one"},
		{"http endpoint", func(c *Config) { c.Models[0].Endpoint = "http://x" }, "models[0].endpoint"},
		{"pricing exponent", func(c *Config) {
			c.Models[0].Pricing = &Pricing{InputPerMillionTokens: "1e2", OutputPerMillionTokens: "1"}
		}, "models[0].pricing.inputPerMillionTokens"},
		{"budget seven decimals", func(c *Config) { c.Budget = &Budget{Daily: "0.1234567", OnExceeded: "Block"} }, "budget.daily"},
		{"budget zero", func(c *Config) { c.Budget = &Budget{Monthly: "0", OnExceeded: "Block"} }, "budget.monthly"},
		{"bad action", func(c *Config) { c.Budget = &Budget{Daily: "1", OnExceeded: "Warn"} }, "budget.onExceeded"},
		{"duplicate integration", func(c *Config) {
			c.Integrations = []HTTPIntegration{{Name: "a", Endpoint: "https://a"}, {Name: "a", Endpoint: "https://b"}}
		}, "integrations[1].name"},
		{"header auth without name", func(c *Config) {
			c.Integrations = []HTTPIntegration{{Name: "a", Endpoint: "https://a", AuthType: "header"}}
		}, "integrations[0].headerName"},
		{"bad failure policy", func(c *Config) { c.Audit.FailurePolicy = "Ignore" }, "audit.failurePolicy"},
		{"bad durability", func(c *Config) { c.Audit.Durability = "Sometimes" }, "audit.durability"},
		{"bad checkpoint key type", func(c *Config) { c.Audit.CheckpointKeyType = "RSA" }, "audit.checkpointKeyType"},
		{"negative queue bound", func(c *Config) { c.Audit.MaxQueueRecords = -1 }, "audit: checkpoint and queue bounds"},
		{"duplicate sink", func(c *Config) { c.Audit.Sinks = []Sink{{Name: "a", Type: "stdout"}, {Name: "a", Type: "stdout"}} }, "audit.sinks[1].name"},
		{"unknown sink type", func(c *Config) { c.Audit.Sinks = []Sink{{Name: "a", Type: "kafka"}} }, "audit.sinks[0].type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %q", err, tt.want)
			}
		})
	}
}

func TestRoundTripAndUnknownFields(t *testing.T) {
	data, err := validConfig().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(data); err != nil {
		t.Fatalf("round trip: %v", err)
	}
	bad := strings.Replace(string(data), `"version": 1,`, `"version": 1, "futureControl": true,`, 1)
	if _, err := Parse([]byte(bad)); err == nil || !strings.Contains(err.Error(), "futureControl") {
		t.Errorf("unknown field accepted: %v", err)
	}
}

func TestShare(t *testing.T) {
	tests := []struct {
		total    string
		replicas int32
		want     string
	}{
		{"50.00", 1, "50.000000"}, {"50.00", 2, "25.000000"}, {"50", 3, "16.666666"}, {"1", 0, "1.000000"}, {"0.000001", 2, "0.000000"},
	}
	for _, tt := range tests {
		got, err := Share(tt.total, tt.replicas)
		if err != nil || got != tt.want {
			t.Errorf("Share(%s, %d) = %s, %v; want %s", tt.total, tt.replicas, got, err, tt.want)
		}
	}
}

// Configurations rendered before the audit queue settings existed stay byte-identical.
func TestUnsetAuditSettingsAreOmitted(t *testing.T) {
	data, err := validConfig().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"checkpoint", "maxQueue", "caFile"} {
		if strings.Contains(string(data), field) {
			t.Errorf("unset %s written:\n%s", field, data)
		}
	}
}

// The fields the renderer fills for a gateway in its own pods survive the round trip,
// and an unset grace is not written.
func TestAgentAuthAndProxyTLSRoundTrip(t *testing.T) {
	c := validConfig()
	c.Listen.Proxy = ":15001"
	c.Listen.ProxyTLS = &TLSFiles{CertFile: ProxyTLSDir + "/tls.crt", KeyFile: ProxyTLSDir + "/tls.key"}
	c.AgentAuth = &AgentAuth{TokenFile: AgentTokenFile}
	data, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "previousTokenGrace") {
		t.Errorf("unset grace written:\n%s", data)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.AgentAuth == nil || got.AgentAuth.TokenFile != AgentTokenFile || got.Listen.ProxyTLS == nil ||
		got.Listen.ProxyTLS.KeyFile != ProxyTLSDir+"/tls.key" || got.Listen.Proxy != ":15001" {
		t.Errorf("round trip lost fields: %+v, %+v", got.AgentAuth, got.Listen)
	}
	c.AgentAuth.PreviousTokenGrace = Duration{Duration: 5 * time.Minute}
	data, _ = c.Marshal()
	if got, err := Parse(data); err != nil || got.AgentAuth.PreviousTokenGrace.Duration != 5*time.Minute {
		t.Errorf("grace round trip: %v, %v", err, got)
	}
}
