package render

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/utils/ptr"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// TestLimitStoreGetsTheWholeVoiceAgentsLimits: with a limit store the gateway config
// carries the VoiceAgent's totals for the store, and each replica's share stays in
// Limits, Voice and Budget as the FailOpen fallback.
func TestLimitStoreGetsTheWholeVoiceAgentsLimits(t *testing.T) {
	va := loadVoiceAgent(t, "full.yaml")
	va.Spec.Gateway = &v1alpha1.GatewaySpec{Replicas: ptr.To[int32](4)}
	va.Spec.Voice = &v1alpha1.VoiceSpec{MaxConcurrentSessions: ptr.To[int32](100), SessionsPerMinute: ptr.To[int32](60)}
	ch, err := Render(va, Inputs{GatewayImage: "img"})
	if err != nil {
		t.Fatal(err)
	}
	c := ch.GatewayConfig
	want := gw.GlobalLimits{RequestsPerSecond: 2, Burst: 200, TokensPerMinute: 200000, MaxConcurrentCalls: 50,
		MaxConcurrentSessions: 100, SessionsPerMinute: 60, Daily: "50.00", Monthly: "1000.00"}
	if c.LimitStore == nil || c.LimitStore.Global != want {
		t.Fatalf("limitStore %+v, want global %+v", c.LimitStore, want)
	}
	if c.LimitStore.KeyPrefix != "voiceagent:{callcenter/support-line}:" || c.LimitStore.FailurePolicy != gw.LimitStoreFailClosed {
		t.Errorf("limitStore %+v", c.LimitStore)
	}
	if c.Limits.RequestsPerSecond != 0.5 || c.Limits.Burst != 50 || c.Limits.MaxConcurrentCalls != 12 ||
		c.Voice.MaxConcurrentSessions != 25 || c.Voice.SessionsPerMinute != 15 || c.Budget.Daily != "12.500000" {
		t.Errorf("per-replica shares changed: limits %+v voice %+v budget %+v", c.Limits, c.Voice, c.Budget)
	}
	r := c.LimitStore.Redis
	if r.UsernameFile != CredentialsDirFile(limitStoreUsernameSlot) || r.PasswordFile != CredentialsDirFile(limitStorePasswordSlot) ||
		r.TLS.CAFile != CredentialsDirFile(limitStoreCASlot) || r.TLS.ServerName != "redis.limits.svc" || r.TLS.Disabled {
		t.Errorf("redis %+v", r)
	}
	if !slices.Contains(ch.EgressAllowed, "redis.limits.svc:6379") {
		t.Errorf("egressAllowed %v lacks the limit store", ch.EgressAllowed)
	}

	// No credentials and no tls: TLS stays on, FailOpen is the default.
	va.Spec.LimitStore = &v1alpha1.LimitStore{Redis: v1alpha1.RedisLimitStore{Address: "10.1.2.3:6380"}}
	ch, err = Render(va, Inputs{GatewayImage: "img"})
	if err != nil {
		t.Fatal(err)
	}
	ls := ch.GatewayConfig.LimitStore
	if ls.FailurePolicy != gw.LimitStoreFailOpen || ls.Redis.TLS != (gw.RedisTLS{}) || ls.Redis.UsernameFile != "" || ls.Redis.PasswordFile != "" {
		t.Errorf("limitStore %+v", ls)
	}
	for _, c := range ch.Credentials {
		if strings.HasPrefix(c.Slot, "limit-store-") {
			t.Errorf("credential %s without a source", c.Slot)
		}
	}
	found := false
	for _, r := range ch.GatewayNetworkPolicy.Spec.Egress {
		if len(r.To) == 1 && r.To[0].IPBlock != nil && r.To[0].IPBlock.CIDR == "10.1.2.3/32" &&
			len(r.Ports) == 1 && r.Ports[0].Port.IntVal == 6380 {
			found = true
		}
	}
	if !found {
		t.Errorf("gateway egress %+v: no rule to 10.1.2.3/32 on 6380", ch.GatewayNetworkPolicy.Spec.Egress)
	}
	// The agent pods do not reach the store: only their gateway does.
	for _, r := range ch.NetworkPolicy.Spec.Egress {
		for _, p := range r.To {
			if p.IPBlock != nil && p.IPBlock.CIDR == "10.1.2.3/32" {
				t.Error("the agent pods' policy opens the limit store")
			}
		}
	}

	va.Spec.LimitStore = nil
	ch, err = Render(va, Inputs{GatewayImage: "img"})
	if err != nil {
		t.Fatal(err)
	}
	if ch.GatewayConfig.LimitStore != nil {
		t.Errorf("limitStore %+v without spec.limitStore", ch.GatewayConfig.LimitStore)
	}
}

// CredentialsDirFile is where the gateway reads a credential slot.
func CredentialsDirFile(slot string) string { return Credential{Slot: slot}.File() }

// TestStoredLimitStoreCannotOpenTheInternet: an address admission refuses today but a
// VoiceAgent stored before the rules may hold is refused by Render too, naming the
// field, and so is a secretRef a pod could not mount.
func TestStoredLimitStoreCannotOpenTheInternet(t *testing.T) {
	for _, addr := range []string{
		"redis.example.com:6379", "8.8.8.8:6379", "169.254.169.254:80", "100.100.100.200:6379",
		"[fd00:ec2::254]:6379", "rediss://redis.limits.svc:6379", "u:p@redis.limits.svc:6379",
		"redis.limits.svc", "redis.limits.svc:0", "redis.limits.svc.other.domain:6379",
	} {
		va := loadVoiceAgent(t, "minimal.yaml")
		va.Spec.LimitStore = &v1alpha1.LimitStore{Redis: v1alpha1.RedisLimitStore{Address: addr}}
		if _, err := Render(va, Inputs{GatewayImage: "img"}); err == nil || !strings.Contains(err.Error(), "spec.limitStore.redis.address") {
			t.Errorf("address %q: Render %v, want refused naming spec.limitStore.redis.address", addr, err)
		}
	}
	va := loadVoiceAgent(t, "minimal.yaml")
	va.Spec.LimitStore = &v1alpha1.LimitStore{Redis: v1alpha1.RedisLimitStore{Address: "redis.limits.svc.cluster.local:6379",
		Credentials: &v1alpha1.CredentialSource{SecretRef: &v1alpha1.SecretKeyReference{Name: "Redis_Pass", Key: "p"}}}}
	if _, err := Render(va, Inputs{GatewayImage: "img"}); err == nil || !strings.Contains(err.Error(), "spec.limitStore.redis.credentials.secretRef.name") {
		t.Errorf("Render %v, want the secretRef refused", err)
	}
}

// TestLimitStoreAdmission holds the CRD's rules for spec.limitStore, judged in-process:
// the addresses users write are admitted, the rest refused with a message that names
// the field (test/invalid has one file per refusal for the real API server).
func TestLimitStoreAdmission(t *testing.T) {
	crds := loadCRDs(t)
	for _, tt := range []struct {
		patch string
		want  string // "" admitted
	}{
		{`{"redis":{"address":"redis.limits.svc:6379"}}`, ""},
		{`{"redis":{"address":"Redis.Limits.svc.cluster.local:6380"}}`, ""},
		{`{"redis":{"address":"10.0.0.5:6379"}}`, ""},
		{`{"redis":{"address":"[fd00::10]:6379"}}`, ""},
		{`{"redis":{"address":"100.64.1.1:65535"},"failurePolicy":"FailClosed"}`, ""},
		{`{"redis":{"address":"redis.limits.svc:6379","username":{"secretRef":{"name":"a","key":"u"}},"credentials":{"secretRef":{"name":"a","key":"p"}},"tls":{"serverName":"redis.limits.svc","ca":{"secretRef":{"name":"ca","key":"ca.crt"}}}}}`, ""},
		{`{"redis":{"address":"10.0.0.5:6379","tls":{"disabled":true}}}`, ""},
		{`{"redis":{"address":"redis://redis.limits.svc:6379"}}`, "without a scheme"},
		{`{"redis":{"address":"a:b@redis.limits.svc:6379"}}`, "no user name or password"},
		{`{"redis":{"address":"redis.limits.svc:0"}}`, "port from 1 to 65535"},
		{`{"redis":{"address":"redis.limits.svc:65536"}}`, "port from 1 to 65535"},
		{`{"redis":{"address":"fd00::10:6379"}}`, "port from 1 to 65535"},
		{`{"redis":{"address":"redis:6379"}}`, "must be inside the cluster"},
		{`{"redis":{"address":"redis.example.com:6379"}}`, "must be inside the cluster"},
		{`{"redis":{"address":"8.8.8.8:6379"}}`, "must be inside the cluster"},
		{`{"redis":{"address":"169.254.169.254:80"}}`, "must be inside the cluster"},
		{`{"redis":{"address":"100.100.100.200:6379"}}`, "must be inside the cluster"},
		{`{"redis":{"address":"[fd00:ec2::254]:6379"}}`, "must be inside the cluster"},
		{`{"redis":{"address":"[::1]:6379"}}`, "must be inside the cluster"},
		{`{"redis":{"address":"127.0.0.1:6379"}}`, "must be inside the cluster"},
		{`{"redis":{"address":"10.0.0.5:6379"},"failurePolicy":"Ignore"}`, "Unsupported value"},
		{`{"redis":{"address":"10.0.0.5:6379","username":{"secretRef":{"name":"a","key":"u"}}}}`, "an ACL user needs its password"},
		{`{"redis":{"address":"10.0.0.5:6379","tls":{"disabled":true,"serverName":"x.svc"}}}`, "which disabled: true turns off"},
		{`{"redis":{"address":"10.0.0.5:6379","tls":{"serverName":"https://x"}}}`, "tls.serverName"},
		{`{"redis":{}}`, "spec.limitStore.redis.address"},
	} {
		obj := mergeMaps(readObject(t, "minimal.yaml"), parseObject(t, []byte(`{"spec":{"limitStore":`+tt.patch+`}}`)))
		errs := crds.voiceAgents.admit(obj)
		switch {
		case tt.want == "" && len(errs) > 0:
			t.Errorf("%s refused: %v", tt.patch, errs)
		case tt.want != "" && len(errs) == 0:
			t.Errorf("%s admitted, want %q", tt.patch, tt.want)
		case tt.want != "" && !strings.Contains(errs.ToAggregate().Error(), tt.want):
			t.Errorf("%s: %v, want %q", tt.patch, errs, tt.want)
		}
		if tt.want == "" {
			spec := obj["spec"].(map[string]any)["limitStore"].(map[string]any)
			if spec["failurePolicy"] == nil {
				t.Errorf("%s: failurePolicy not defaulted", tt.patch)
			}
		}
	}
}
