package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/audit"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// DefaultDeliveryFailingAfter is how long a gateway may hold undelivered records for a
// sink, with no successful delivery, before the sink is reported as failing.
const DefaultDeliveryFailingAfter = 5 * time.Minute

// DefaultDeliveryPollInterval is how often an AuditSink in use is looked at again to
// refresh its delivery status.
const DefaultDeliveryPollInterval = 30 * time.Second

// AuditStatusReader reads a gateway pod's audit delivery summary.
type AuditStatusReader interface {
	Read(ctx context.Context, pod *corev1.Pod) (*audit.Status, error)
}

// HTTPAuditStatusReader reads GET /audit/status on the gateway container's port named
// "admin", at the pod's IP. The NetworkPolicy admits the operator's pods to that port
// only; it serves no credential.
type HTTPAuditStatusReader struct {
	Client *http.Client
}

// Read implements AuditStatusReader.
func (h HTTPAuditStatusReader) Read(ctx context.Context, pod *corev1.Pod) (*audit.Status, error) {
	var st audit.Status
	if err := getGatewayJSON(ctx, h.Client, pod, "/audit/status", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// getGatewayJSON reads a JSON answer of at most 1 MiB from path on the gateway
// container's port named "admin", at the pod's IP. The NetworkPolicy admits the
// operator's pods to that port only; it serves no credential.
func getGatewayJSON(ctx context.Context, c *http.Client, pod *corev1.Pod, path string, out any) error {
	port := adminPort(pod)
	if port == 0 || pod.Status.PodIP == "" {
		return fmt.Errorf("pod %s has no IP or no admin port yet", pod.Name)
	}
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port))) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("request %s: %w", url, err)
	}
	if c == nil {
		c = &http.Client{Timeout: 3 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s of pod %s: %w", path, pod.Name, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
		return fmt.Errorf("decode %s: %w", url, err)
	}
	return nil
}

func adminPort(pod *corev1.Pod) int32 {
	for _, c := range pod.Spec.Containers {
		if c.Name != render.GatewayContainer {
			continue
		}
		for _, p := range c.Ports {
			if p.Name == "admin" {
				return p.ContainerPort
			}
		}
	}
	return 0
}

// gatewayReport is one pod's summary, as read.
type gatewayReport struct {
	pod    string
	status *audit.Status
}

// summariseDelivery sums the reports about one sink, and names the first pod that has
// held records for longer than failingAfter without delivering any ("" when none).
func summariseDelivery(sink string, reports []gatewayReport, now time.Time, failingAfter time.Duration) (*v1alpha1.AuditDeliveryStatus, string, string) {
	out := &v1alpha1.AuditDeliveryStatus{}
	var failingPod, failingDetail string
	sort.Slice(reports, func(i, j int) bool { return reports[i].pod < reports[j].pod })
	for _, r := range reports {
		out.ReportingGateways++
		out.Dropped += int64(r.status.Dropped)
		for _, s := range r.status.Sinks {
			if s.Name != sink {
				continue
			}
			out.RecordsDelivered += int64(s.Delivered)
			out.Backlog += int64(s.Backlog)
			if s.LastSuccess != nil && (out.LastSuccessfulDelivery == nil || s.LastSuccess.After(out.LastSuccessfulDelivery.Time)) {
				t := metav1.NewTime(s.LastSuccess.UTC().Truncate(time.Second))
				out.LastSuccessfulDelivery = &t
			}
			stale := s.LastSuccess == nil || now.Sub(*s.LastSuccess) > failingAfter
			if s.Backlog > 0 && stale && failingPod == "" {
				failingPod = r.pod
				if s.LastSuccess == nil {
					failingDetail = fmt.Sprintf("%d records waiting and no successful delivery since the gateway started", s.Backlog)
				} else {
					failingDetail = fmt.Sprintf("%d records waiting; last successful delivery %s ago", s.Backlog, now.Sub(*s.LastSuccess).Truncate(time.Second))
				}
			}
		}
	}
	return out, failingPod, failingDetail
}

// readDelivery asks every running gateway of the sink's users for its summary. A pod
// that does not answer is skipped (it may be starting); its records stay in its queue.
func (r *AuditSinkReconciler) readDelivery(ctx context.Context, sink *v1alpha1.AuditSink, users []string) ([]gatewayReport, error) {
	var reports []gatewayReport
	for _, user := range users {
		pods := &corev1.PodList{}
		if err := r.Client.List(ctx, pods, client.InNamespace(sink.Namespace),
			client.MatchingLabels(render.GatewaySelectorLabels(user))); err != nil {
			return nil, fmt.Errorf("list pods of VoiceAgent %s: %w", user, err)
		}
		for i := range pods.Items {
			pod := &pods.Items[i]
			if pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			st, err := r.StatusReader.Read(rctx, pod)
			cancel()
			if err != nil {
				log.FromContext(ctx).V(1).Info("gateway skipped: no audit delivery status", "pod", pod.Name, "error", err.Error())
				continue
			}
			reports = append(reports, gatewayReport{pod: pod.Name, status: st})
		}
	}
	return reports, nil
}
