package controllers_test

import (
	"os"
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// TestClusterRoleIsLeastPrivilege checks the generated ClusterRole: no wildcards, and
// Secrets may be listed and watched (as metadata) and created (the generated session
// key), never fetched one by one, updated or deleted. The whole suite runs the manager
// as a user bound to this role alone, which proves it is sufficient.
func TestClusterRoleIsLeastPrivilege(t *testing.T) {
	data, err := os.ReadFile(repoPath("config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, role); err != nil {
		t.Fatal(err)
	}
	for _, r := range role.Rules {
		for _, list := range [][]string{r.Verbs, r.Resources, r.APIGroups} {
			if slices.Contains(list, "*") {
				t.Errorf("wildcard in rule %+v", r)
			}
		}
		// Secrets: created (the session key, the agent token), patched (a token
		// rotation sets fields without reading any) and deleted (cert-manager's Secrets
		// of a VoiceAgent that went before adopting them), never read: no get, and list
		// and watch serve metadata only.
		if slices.Contains(r.Resources, "secrets") {
			for _, v := range r.Verbs {
				if !slices.Contains([]string{"list", "watch", "create", "patch", "delete"}, v) {
					t.Errorf("secrets verb %q is more than the operator needs", v)
				}
			}
		}
	}
}
