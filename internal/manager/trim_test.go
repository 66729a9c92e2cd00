package manager

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestTrimPodKeepsWhatTheOperatorReads: the admin port, phase, IP and termination
// messages stay; the rest of the spec and status goes.
func TestTrimPodKeepsWhatTheOperatorReads(t *testing.T) {
	term := &corev1.ContainerStateTerminated{ExitCode: 0, Message: `{"auditRecordsLost":{"siem":7}}`, FinishedAt: metav1.Now()}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "gw-1", Namespace: "ns", UID: "u1", Labels: map[string]string{"a": "b"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec: corev1.PodSpec{
			Volumes: []corev1.Volume{{Name: "config"}},
			Containers: []corev1.Container{{Name: "gateway", Image: "img", Env: []corev1.EnvVar{{Name: "X", Value: "y"}},
				Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 15020}}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "gateway", Image: "img", ImageID: "sha",
				LastTerminationState: corev1.ContainerState{Terminated: term}}}},
	}
	out, err := trimPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	p := out.(*corev1.Pod)
	if p.Name != "gw-1" || p.UID != "u1" || p.Labels["a"] != "b" || p.ManagedFields != nil {
		t.Errorf("metadata: %+v", p.ObjectMeta)
	}
	if len(p.Spec.Containers) != 1 || p.Spec.Containers[0].Name != "gateway" || p.Spec.Containers[0].Ports[0].ContainerPort != 15020 {
		t.Errorf("containers: %+v", p.Spec.Containers)
	}
	if p.Spec.Volumes != nil || p.Spec.Containers[0].Env != nil || p.Spec.Containers[0].Image != "" || p.Status.Conditions != nil {
		t.Errorf("kept what the operator never reads: %+v", p)
	}
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP != "10.0.0.1" || len(p.Status.PodIPs) != 1 {
		t.Errorf("status: %+v", p.Status)
	}
	cs := p.Status.ContainerStatuses
	if len(cs) != 1 || cs[0].Name != "gateway" || cs[0].LastTerminationState.Terminated == nil ||
		cs[0].LastTerminationState.Terminated.Message != term.Message || cs[0].ImageID != "" {
		t.Errorf("container statuses: %+v", cs)
	}
	if other, _ := trimPod("not a pod"); other != "not a pod" {
		t.Errorf("a non-pod was changed: %v", other)
	}
}
