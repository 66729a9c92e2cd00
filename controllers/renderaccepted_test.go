package controllers_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// TestAdmittedSpecsRenderAcceptedChildren: any VoiceAgent (and AuditSink) the API
// server admits renders into children the API server admits too, or is refused by
// Render with an error that names the field. Random specs are drawn from pools of
// ordinary and edge values (the ports the gateway uses, AuditSink names with dots,
// syslog ports out of range, durations past what Go holds, CIDRs that are not), created
// with dry run; the children of the admitted ones are server-side applied with dry run,
// the third-party ones against the real CRDs of cert-manager and External Secrets.
// Internal/render's FuzzRender checks the same without an API server; this holds its
// in-process admission to the real one.
func TestAdmittedSpecsRenderAcceptedChildren(t *testing.T) {
	const specs = 300
	ns := newNamespace(t)
	rng := rand.New(rand.NewPCG(17, 10)) // fixed: a failure names a spec that comes back
	var admitted, rendered, refusedByRender int
	known := map[string]int{}
	for i := 0; i < specs; i++ {
		g := newSpecGen(rng, ns, i)
		va, sink := g.objects()
		if err := k8s.Create(ctx, va, client.DryRunAll); err != nil {
			continue // refused at admission
		}
		in := render.Inputs{GatewayImage: testImage, CertManager: i%2 == 0}
		if sink != nil {
			if err := k8s.Create(ctx, sink, client.DryRunAll); err != nil {
				continue
			}
			s := v1alpha1.AuditSink{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(sink.Object, &s); err != nil {
				if g.hugeDuration && strings.Contains(err.Error(), "invalid duration") {
					known["a duration past Go's 290 years: admitted, not decodable (api/ to bound durations)"]++
					continue
				}
				t.Errorf("spec %d: the API server admits this AuditSink and the operator cannot decode it: %v\n%v", i, err, sink.Object)
				continue
			}
			in.Sinks = []v1alpha1.AuditSink{s}
		}
		admitted++
		typed := &v1alpha1.VoiceAgent{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(va.Object, typed); err != nil {
			if g.hugeDuration && strings.Contains(err.Error(), "invalid duration") {
				known["a duration past Go's 290 years: admitted, not decodable (api/ to bound durations)"]++
				continue
			}
			t.Errorf("spec %d: the API server admits this VoiceAgent and the operator cannot decode it: %v\n%v", i, err, va.Object)
			continue
		}
		ch, err := render.Render(typed, in)
		if err != nil {
			if !strings.Contains(err.Error(), "spec.") {
				t.Errorf("spec %d: Render's error does not name the field: %v", i, err)
			}
			refusedByRender++
			if testing.Verbose() {
				t.Logf("spec %d refused by Render: %v", i, err)
			}
			continue
		}
		rendered++
		objs := []client.Object{ch.ServiceAccount, ch.ConfigMap, ch.Service, ch.NetworkPolicy, ch.Deployment,
			ch.GatewayServiceAccount, ch.GatewayService, ch.GatewayNetworkPolicy, ch.GatewayDeployment}
		for _, pdb := range []*policyv1.PodDisruptionBudget{ch.PodDisruptionBudget, ch.GatewayPodDisruptionBudget} {
			if pdb != nil {
				objs = append(objs, pdb)
			}
		}
		for _, o := range ch.GatewayTLS {
			objs = append(objs, o)
		}
		if ch.Certificate != nil {
			objs = append(objs, ch.Certificate)
		}
		for _, es := range ch.ExternalSecrets {
			objs = append(objs, es)
		}
		for _, o := range objs {
			m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{Object: m}
			err = k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.DryRunAll,
				client.FieldOwner(render.FieldOwner), client.ForceOwnership)
			switch {
			case err == nil:
			case u.GetKind() == "NetworkPolicy" && g.badUserRule:
				known["spec.network.allowIngressFrom selectors, which the CRD checks only for type, refused on the NetworkPolicy (allowEgressTo is checked at admission)"]++
			default:
				t.Errorf("spec %d: %s %s refused: %v\nVoiceAgent spec: %v", i, u.GetKind(), u.GetName(), err, va.Object["spec"])
			}
		}
	}
	t.Logf("%d specs: %d admitted, %d rendered and their children accepted, %d refused by Render naming the field; known gaps: %v",
		specs, admitted, rendered, refusedByRender, known)
	if rendered < specs/4 {
		t.Errorf("only %d of %d specs rendered: the generator makes too few admitted specs to test anything", rendered, specs)
	}
}

// specGen draws one VoiceAgent and maybe an AuditSink from pools of values, and
// remembers which draws are known gaps of the API's validation.
type specGen struct {
	rng                       *rand.Rand
	ns                        string
	i                         int
	hugeDuration, badUserRule bool
}

func newSpecGen(rng *rand.Rand, ns string, i int) *specGen { return &specGen{rng: rng, ns: ns, i: i} }

// pick draws from pool: its first value, the ordinary one, three times in four, else
// any other (the edges).
func pick[T any](g *specGen, pool ...T) T {
	if len(pool) == 1 || g.rng.IntN(4) > 0 {
		return pool[0]
	}
	return pool[1+g.rng.IntN(len(pool)-1)]
}

func (g *specGen) maybe() bool { return g.rng.IntN(2) == 0 }

func (g *specGen) duration() string {
	d := pick(g, "30s", "1ns", "0s", "90m", "4h", "1h30m", "9999999999999h")
	if d == "9999999999999h" {
		g.hugeDuration = true
	}
	return d
}

func (g *specGen) cred(slot string) map[string]any {
	if g.maybe() {
		es := map[string]any{
			"storeRef":  map[string]any{"kind": pick(g, "SecretStore", "ClusterSecretStore"), "name": "vault"},
			"remoteRef": map[string]any{"key": "prod/" + slot, "property": pick(g, "", "api_key")},
		}
		if g.maybe() {
			es["refreshInterval"] = g.duration()
		}
		return map[string]any{"externalSecret": es}
	}
	return map[string]any{"secretRef": map[string]any{
		"name": pick(g, slot+"-key", "a", "db.creds", "Upper", strings.Repeat("s", 253)),
		"key":  pick(g, "api-key", "value", "a.b", ".."),
	}}
}

func (g *specGen) objects() (va, sink *unstructured.Unstructured) {
	providers := []string{"gemini", "openai", "anthropic", "openai-compatible"}
	model := map[string]any{"provider": providers[g.rng.IntN(len(providers))], "name": pick(g, "gemini-2.5-flash", "gpt-4o-mini", "m"),
		"credentials": g.cred("model")}
	if g.maybe() {
		model["endpoint"] = pick(g, "https://llm.internal.svc:8443/v1", "https://10.1.2.3:9443/", "https://[2001:db8::1]/",
			"https://api.openai.com/v1", "https://a.b!c.svc/", "https://llm:99999/", "https://llm:8443v")
	}
	if g.maybe() {
		model["timeout"] = g.duration()
	}
	if g.maybe() {
		model["fallbacks"] = []any{map[string]any{"provider": providers[g.rng.IntN(len(providers))], "name": "fb", "credentials": g.cred("fallback"),
			"endpoint": pick(g, "https://api.anthropic.com", "https://x.y.svc")}}
	}
	name := pick(g, "a", "support-line", "agent-"+strings.Repeat("x", 34), fmt.Sprintf("v%d", g.i))
	spec := map[string]any{"image": pick(g, "agent:1", "registry.example.com/a@sha256:"+strings.Repeat("ab", 32), " agent:1"),
		"replicas": int64(pick(g, 0, 1, 2, 3, 100)), "model": model}
	if g.maybe() {
		spec["port"] = int64(pick(g, 1024, 8080, 8443, 15001, 15020, 65535))
	}
	if g.maybe() {
		ty := []string{"rest", "graphql", "slack", "whatsapp", "email", "database"}[g.rng.IntN(6)]
		in := map[string]any{"name": pick(g, "crm", "orders-db", strings.Repeat("i", 40)), "type": ty, "credentials": g.cred("integration")}
		if ty == "database" {
			in["host"], in["port"] = pick(g, "db.data.svc.cluster.local", "10.0.0.5", "Orders.DATA.svc", "1:2"), int64(pick(g, 1, 5432, 65535))
		} else {
			in["endpoint"] = pick(g, "https://crm.example.com/api", "https://tickets.support.svc.cluster.local:8443/", "https://x."+strings.Repeat("n", 64)+".svc/")
		}
		if g.maybe() {
			in["rateLimit"] = map[string]any{"requestsPerMinute": int64(pick(g, 1, 7, 60)), "burst": int64(pick(g, 1, 10))}
		}
		spec["integrations"] = []any{in}
	}
	if g.maybe() {
		spec["rateLimits"] = map[string]any{"requestsPerSecond": int64(pick(g, 1, 2, 1000)), "burst": int64(pick(g, 1, 200)),
			"maxConcurrentCalls": int64(pick(g, 1, 50)), "tokensPerMinute": int64(pick(g, 1, 200000))}
	}
	if g.maybe() {
		spec["costLimits"] = map[string]any{"dailyBudget": pick(g, "50.00", "0.000001", "0.000003", "999999999.999999"),
			"onExceeded": pick(g, "Block", "AlertOnly")}
	}
	if g.maybe() {
		spec["voice"] = map[string]any{"maxSessionDuration": g.duration(), "maxConcurrentSessions": int64(pick(g, 1, 10)),
			"drainTimeout": pick(g, "10m", "0s", "4h")}
	}
	enc := map[string]any{}
	if g.maybe() {
		tls := map[string]any{"issuerRef": map[string]any{"kind": "ClusterIssuer", "name": "ca"}}
		if g.maybe() {
			tls["duration"], tls["renewBefore"] = g.duration(), g.duration()
		}
		enc["inTransit"] = tls
	}
	if g.maybe() {
		enc["atRest"] = map[string]any{"keyFrom": g.cred("session-key")}
	}
	if len(enc) > 0 {
		spec["encryption"] = enc
	}
	if g.maybe() {
		cidr := pick(g, "10.0.0.0/8", "2001:db8::/32", "not-a-cidr")
		port := pick(g, int64(53), int64(0), int64(70000))
		label := pick(g, "telephony", "bad value!")
		g.badUserRule = cidr == "not-a-cidr" || port != 53 || label != "telephony"
		spec["network"] = map[string]any{
			"allowIngressFrom": []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": label}}}},
			"allowEgressTo":    []any{map[string]any{"to": []any{map[string]any{"ipBlock": map[string]any{"cidr": cidr}}}, "ports": []any{map[string]any{"port": port}}}},
		}
	}
	if g.maybe() {
		sinkName := pick(g, "soc-webhook", "soc.webhook.eu", "siem-webhook-production-eu-west-1-primary", strings.Repeat("a", 100)+"."+strings.Repeat("b", 149))
		spec["audit"] = map[string]any{"sinkRefs": []any{map[string]any{"name": sinkName}}}
		sinkSpec := map[string]any{"type": "webhook", "webhook": map[string]any{"url": "https://siem.example.com/ingest",
			"credentials": map[string]any{"bearerToken": g.cred("sink-token"), "signingKey": g.cred("sink-key")}}}
		if g.maybe() {
			sinkSpec = map[string]any{"type": "syslog", "syslog": map[string]any{"address": pick(g, "syslog.example.com:6514", "syslog.example.com:0", "syslog.example.com:99999")}}
		}
		sink = &unstructured.Unstructured{Object: map[string]any{"apiVersion": "voiceagent.dev/v1alpha1", "kind": "AuditSink",
			"metadata": map[string]any{"name": sinkName, "namespace": g.ns}, "spec": sinkSpec}}
	}
	// The limit store draws from a stream of its own, so that the draws above stay
	// those of the specs before it.
	ls := &specGen{rng: rand.New(rand.NewPCG(uint64(g.i), 14)), ns: g.ns, i: g.i}
	if ls.rng.IntN(4) == 0 {
		redis := map[string]any{"address": pick(ls, "redis.limits.svc:6379", "10.0.0.7:6380", "[fd00::7]:6379",
			"Redis.Limits.svc.cluster.local.:6379", "redis.limits.svc.other.example:6379", "redis.example.com:6379", "rediss://redis.limits.svc:6379")}
		if ls.maybe() {
			redis["credentials"] = ls.cred("limit-store-password")
			if ls.maybe() {
				redis["username"] = ls.cred("limit-store-username")
			}
		}
		if ls.maybe() {
			redis["tls"] = pick(ls, map[string]any{"ca": ls.cred("limit-store-ca")}, map[string]any{"disabled": true},
				map[string]any{"serverName": "redis.limits.svc"})
		}
		spec["limitStore"] = map[string]any{"redis": redis, "failurePolicy": pick(ls, "FailOpen", "FailClosed")}
	}
	va = &unstructured.Unstructured{Object: map[string]any{"apiVersion": "voiceagent.dev/v1alpha1", "kind": "VoiceAgent",
		"metadata": map[string]any{"name": name, "namespace": g.ns}, "spec": spec}}
	return va, sink
}
