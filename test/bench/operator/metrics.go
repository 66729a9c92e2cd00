package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

func parseMetrics(text string) []sample {
	var out []sample
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
			s.name = line[:i]
			rest = line[i+1:]
			for {
				eq := strings.IndexByte(rest, '=')
				if eq < 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
					break
				}
				key := strings.TrimLeft(rest[:eq], ", ")
				rest = rest[eq+2:]
				var b strings.Builder
				j := 0
				for ; j < len(rest); j++ {
					if rest[j] == '\\' && j+1 < len(rest) {
						j++
						b.WriteByte(rest[j])
						continue
					}
					if rest[j] == '"' {
						break
					}
					b.WriteByte(rest[j])
				}
				s.labels[key] = b.String()
				rest = rest[min(j+1, len(rest)):]
				if strings.HasPrefix(rest, "}") {
					rest = rest[1:]
					break
				}
			}
		} else if i >= 0 {
			s.name = line[:i]
			rest = line[i:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

// reqKey is one series of the API server's apiserver_request_total, without the code.
type reqKey struct{ verb, group, resource, subresource string }

type reqCounts map[reqKey]float64

func apiserverRequests(ctx context.Context, rc rest.Interface) (reqCounts, error) {
	b, err := rc.Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("scrape the API server's /metrics: %w", err)
	}
	out := reqCounts{}
	for _, s := range parseMetrics(string(b)) {
		suffix := ""
		switch s.name {
		case "apiserver_request_total":
		case "apiserver_request_duration_seconds_sum":
			suffix = "/sum"
		case "apiserver_request_duration_seconds_count":
			suffix = "/count"
		default:
			continue
		}
		verb := s.labels["verb"]
		switch verb { // the verbs as the API server's audit log names them
		case "POST":
			verb = "CREATE"
		case "PUT":
			verb = "UPDATE"
		}
		out[reqKey{verb + suffix, s.labels["group"], s.labels["resource"], s.labels["subresource"]}] += s.value
	}
	return out, nil
}

// meanLatency is the API server's mean request duration between the scrapes, by verb,
// over the operator's series (reads and writes, no watches).
func meanLatency(before, after reqCounts) string {
	sum, count := map[string]float64{}, map[string]float64{}
	for k, v := range after {
		verb, kind, ok := strings.Cut(k.verb, "/")
		if !ok || verb == "WATCH" {
			continue
		}
		base := k
		base.verb = verb
		if !isOperatorSeries(base) {
			continue
		}
		d := v - before[k]
		if kind == "sum" {
			sum[verb] += d
		} else {
			count[verb] += d
		}
	}
	var parts []string
	for verb, c := range count {
		if c > 0 {
			parts = append(parts, fmt.Sprintf("%s %.1f ms", verb, 1000*sum[verb]/c))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// settle waits until the API server has served no write but leases' for 3 s in a row
// (at most a minute): the reactions to one phase (Endpoints, EndpointSlices,
// PodDisruptionBudget status, garbage collection) are not counted in the next.
func settle(ctx context.Context, rc rest.Interface) (time.Duration, error) {
	start := time.Now()
	prev, err := apiserverRequests(ctx, rc)
	if err != nil {
		return 0, err
	}
	quiet := 0
	for time.Since(start) < time.Minute && quiet < 3 {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Second):
		}
		cur, err := apiserverRequests(ctx, rc)
		if err != nil {
			return 0, err
		}
		writes := 0.0
		for k, v := range cur {
			if writeVerbs[k.verb] && k.resource != "leases" {
				writes += v - prev[k]
			}
		}
		if writes == 0 {
			quiet++
		} else {
			quiet = 0
		}
		prev = cur
	}
	return time.Since(start), nil
}

// describeWrites lists every series, of any resource, with writes between the two
// scrapes: what a figure of "writes at rest" is made of.
func describeWrites(before, after reqCounts) string {
	return describe(before, after, func(k reqKey) bool { return writeVerbs[k.verb] })
}

// describeOperator lists the operator's series with requests, reads included.
func describeOperator(before, after reqCounts) string {
	return describe(before, after, func(k reqKey) bool {
		return isOperatorSeries(k) && k.verb != "WATCH" && !strings.Contains(k.verb, "/")
	})
}

func describe(before, after reqCounts, keep func(reqKey) bool) string {
	var parts []string
	for k, v := range after {
		if d := v - before[k]; d != 0 && keep(k) {
			r := k.resource
			if k.subresource != "" {
				r += "/" + k.subresource
			}
			if k.group != "" {
				r += "." + k.group
			}
			parts = append(parts, fmt.Sprintf("%s %s %.0f", k.verb, r, d))
		}
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// operatorResources are what the manager reads and writes. Other components touch few
// of them: kube-controller-manager writes the PodDisruptionBudgets' status (never the
// operator), and with -workloads the Deployments' status; those are left out.
var operatorResources = map[string]bool{
	"voiceagents": true, "auditsinks": true, "serviceaccounts": true, "configmaps": true,
	"services": true, "networkpolicies": true, "deployments": true, "poddisruptionbudgets": true,
	"horizontalpodautoscalers": true, "secrets": true, "events": true,
	"customresourcedefinitions": true, "certificates": true, "issuers": true,
	"externalsecrets": true, "scaledobjects": true,
}

func isOperatorSeries(k reqKey) bool {
	if !operatorResources[k.resource] {
		return false
	}
	// The manager reads VoiceAgents from its cache only; GETs of one come from the
	// garbage collector, which looks up the owner of every new child.
	if k.resource == "voiceagents" && k.subresource == "" && k.verb == "GET" {
		return false
	}
	return k.subresource == "" || (k.subresource == "status" && (k.resource == "voiceagents" || k.resource == "auditsinks"))
}

var writeVerbs = map[string]bool{"CREATE": true, "UPDATE": true, "PATCH": true, "APPLY": true, "DELETE": true, "DELETECOLLECTION": true}

// byVerb sums after-before over the operator's series, events apart, less the bench's
// own requests (own, by verb and resource).
func byVerb(before, after reqCounts, own map[reqKey]float64) (verbs map[string]float64, events float64) {
	verbs = map[string]float64{}
	for k, v := range after {
		d := v - before[k]
		if d == 0 || strings.Contains(k.verb, "/") || !isOperatorSeries(k) {
			continue
		}
		if k.resource == "events" {
			// The manager's events are events.k8s.io/v1; kube-controller-manager's core/v1.
			if writeVerbs[k.verb] && k.group == "events.k8s.io" {
				events += d
			}
			continue
		}
		verbs[k.verb] += d
	}
	for k, v := range own {
		verbs[k.verb] -= v
	}
	return verbs, events
}

func sumWrites(verbs map[string]float64) float64 {
	var n float64
	for v, c := range verbs {
		if writeVerbs[v] {
			n += c
		}
	}
	return n
}

func formatVerbs(verbs map[string]float64, n int) string {
	var keys []string
	for k, v := range verbs {
		if math.Abs(v) > 0.5 && k != "WATCH" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.2f", k, verbs[k]/float64(n)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// managerMetrics is what the bench reads from the manager's own /metrics.
type managerMetrics struct {
	clientRequests map[string]float64 // rest_client_requests_total by method
	reconciles     float64            // controller_runtime_reconcile_total{controller="voiceagent"}
	buckets        map[float64]float64
	sum, count     float64
	goMem          map[string]float64 // go_memstats_* gauges
}

func scrapeManager(url string) (managerMetrics, error) {
	mm := managerMetrics{clientRequests: map[string]float64{}, buckets: map[float64]float64{}, goMem: map[string]float64{}}
	resp, err := http.Get(url)
	if err != nil {
		return mm, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return mm, err
	}
	for _, s := range parseMetrics(string(b)) {
		switch {
		case strings.HasPrefix(s.name, "go_memstats_") || s.name == "go_goroutines":
			mm.goMem[strings.TrimPrefix(s.name, "go_memstats_")] = s.value
		case s.name == "rest_client_requests_total":
			mm.clientRequests[s.labels["method"]] += s.value
		case s.labels["controller"] != "voiceagent":
		case s.name == "controller_runtime_reconcile_total":
			mm.reconciles += s.value
		case s.name == "controller_runtime_reconcile_time_seconds_bucket":
			le, err := strconv.ParseFloat(s.labels["le"], 64)
			if s.labels["le"] == "+Inf" {
				le, err = math.Inf(1), nil
			}
			if err == nil {
				mm.buckets[le] += s.value
			}
		case s.name == "controller_runtime_reconcile_time_seconds_sum":
			mm.sum += s.value
		case s.name == "controller_runtime_reconcile_time_seconds_count":
			mm.count += s.value
		}
	}
	return mm, nil
}

func (mm managerMetrics) minus(before managerMetrics) managerMetrics {
	out := managerMetrics{clientRequests: map[string]float64{}, buckets: map[float64]float64{},
		reconciles: mm.reconciles - before.reconciles, sum: mm.sum - before.sum, count: mm.count - before.count}
	for k, v := range mm.clientRequests {
		out.clientRequests[k] = v - before.clientRequests[k]
	}
	for k, v := range mm.buckets {
		out.buckets[k] = v - before.buckets[k]
	}
	return out
}

func (mm managerMetrics) memory() string {
	m := func(k string) float64 { return mm.goMem[k] / (1 << 20) }
	return fmt.Sprintf("heap in use %.0f MiB, heap allocated %.0f MiB, next GC at %.0f MiB, from the OS %.0f MiB, goroutines %.0f",
		m("heap_inuse_bytes"), m("heap_alloc_bytes"), m("next_gc_bytes"), m("sys_bytes"), mm.goMem["go_goroutines"])
}

// clientTotal is every request of the manager's but its PUTs (clientWrites).
func (mm managerMetrics) clientTotal() float64 {
	var n float64
	for m, v := range mm.clientRequests {
		if m != "PUT" {
			n += v
		}
	}
	return n
}

// clientWrites are the manager's writes but its PUTs: the operator makes none (server-side
// apply, creates, status patches), and its leader election renews the Lease with one every
// 2 s. clientPuts counts those, shown beside the Lease writes the API server reports.
func (mm managerMetrics) clientWrites() float64 {
	var n float64
	for m, v := range mm.clientRequests {
		if m != "GET" && m != "PUT" {
			n += v
		}
	}
	return n
}

func (mm managerMetrics) clientPuts() float64 { return mm.clientRequests["PUT"] }

// quantile interpolates linearly within the bucket, as Prometheus' histogram_quantile.
func (mm managerMetrics) quantile(q float64) float64 {
	var les []float64
	for le := range mm.buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	if len(les) == 0 {
		return math.NaN()
	}
	total := mm.buckets[les[len(les)-1]]
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	prevLe, prevCount := 0.0, 0.0
	for _, le := range les {
		c := mm.buckets[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				return prevLe
			}
			if c == prevCount {
				return le
			}
			return prevLe + (le-prevLe)*(rank-prevCount)/(c-prevCount)
		}
		prevLe, prevCount = le, c
	}
	return les[len(les)-1]
}
