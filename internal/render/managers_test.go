package render

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSpecManagers(t *testing.T) {
	at := func(min int) *metav1.Time {
		v := metav1.NewTime(time.Date(2026, 11, 1, 10, min, 0, 0, time.UTC))
		return &v
	}
	fields := func(s string) *metav1.FieldsV1 { return metav1.NewFieldsV1(s) }
	tests := []struct {
		name    string
		entries []metav1.ManagedFieldsEntry
		want    []string
	}{
		{"none", nil, []string{}},
		{"newest first, apply marked", []metav1.ManagedFieldsEntry{
			{Manager: "kubectl-client-side-apply", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(1), FieldsV1: fields(`{"f:spec":{"f:replicas":{}}}`)},
			{Manager: "argocd-controller", Operation: metav1.ManagedFieldsOperationApply, Time: at(5), FieldsV1: fields(`{"f:spec":{"f:model":{}}}`)},
		}, []string{"argocd-controller (apply)", "kubectl-client-side-apply"}},
		{"status and metadata-only managers are not spec authors", []metav1.ManagedFieldsEntry{
			{Manager: "voiceagent-operator", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status", Time: at(9), FieldsV1: fields(`{"f:status":{}}`)},
			{Manager: "kubectl-label", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(8), FieldsV1: fields(`{"f:metadata":{"f:labels":{}}}`)},
			{Manager: "kubectl-edit", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(2), FieldsV1: fields(`{"f:spec":{}}`)},
		}, []string{"kubectl-edit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SpecManagers(tt.entries); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestGatewayConfigCarriesGenerationAndSpecOwners(t *testing.T) {
	va := loadVoiceAgent(t, "minimal.yaml")
	va.Generation = 3
	now := metav1.Now()
	va.ManagedFields = []metav1.ManagedFieldsEntry{
		{Manager: "kubectl-edit", Operation: metav1.ManagedFieldsOperationUpdate, Time: &now, FieldsV1: metav1.NewFieldsV1(`{"f:spec":{}}`)},
		{Manager: "argocd-controller", Operation: metav1.ManagedFieldsOperationApply, Time: &now, FieldsV1: metav1.NewFieldsV1(`{"f:spec":{}}`)},
	}
	cfg, err := GatewayConfig(va, nil, Credentials(va, nil), false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Generation != 3 || !reflect.DeepEqual(cfg.SpecManagers, []string{"argocd-controller (apply)", "kubectl-edit"}) {
		t.Errorf("generation %d, spec managers %q", cfg.Generation, cfg.SpecManagers)
	}
}
