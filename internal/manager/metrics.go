package manager

import (
	"crypto/tls"
	"fmt"
	"path/filepath"

	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// Names of the metrics certificate files in Options.MetricsCertDir: those of a
// kubernetes.io/tls Secret (and of a cert-manager Certificate's Secret) mounted as a volume.
const (
	MetricsCertName = "tls.crt"
	MetricsKeyName  = "tls.key"
)

// metricsOptions is how the manager serves /metrics, as kubebuilder v4 scaffolds it. With
// MetricsSecure, over HTTPS, and every request must carry a bearer token that the API
// server accepts (TokenReview) for a subject that may `get` the non-resource URL /metrics
// (SubjectAccessReview; the metrics-reader ClusterRole grants it): the operator's metrics
// name namespaces and VoiceAgents, which is more than anyone who can reach the pod should
// learn. Without MetricsSecure, plain HTTP for anyone (for a local `make run`).
//
// The returned watcher, when not nil, must be added to the manager: it reloads the
// certificate when the mounted Secret is renewed.
func metricsOptions(opts Options) (metricsserver.Options, *certwatcher.CertWatcher, error) {
	mo := metricsserver.Options{BindAddress: opts.MetricsAddr, SecureServing: opts.MetricsSecure}
	if !opts.MetricsSecure {
		return mo, nil, nil
	}
	mo.FilterProvider = filters.WithAuthenticationAndAuthorization
	if !opts.EnableHTTP2 {
		// HTTP/2 stream cancellation ("Rapid Reset", CVE-2023-44487, and the stream
		// exhaustion of CVE-2023-39325) costs the server more than the client; a scraper
		// needs nothing HTTP/1.1 lacks.
		mo.TLSOpts = append(mo.TLSOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	if opts.MetricsCertDir == "" {
		// controller-runtime generates a self-signed certificate at start: the traffic is
		// encrypted, and a scraper that has no CA to check it against skips verification
		// (the chart's ServiceMonitor does so unless it is given one).
		return mo, nil, nil
	}
	w, err := certwatcher.New(filepath.Join(opts.MetricsCertDir, MetricsCertName), filepath.Join(opts.MetricsCertDir, MetricsKeyName))
	if err != nil {
		return mo, nil, fmt.Errorf("metrics certificate in %s: %w", opts.MetricsCertDir, err)
	}
	mo.TLSOpts = append(mo.TLSOpts, func(c *tls.Config) { c.GetCertificate = w.GetCertificate })
	return mo, w, nil
}
