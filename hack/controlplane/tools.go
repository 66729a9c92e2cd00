//go:build tools

// Package controlplane pins the Kubernetes and etcd commands that the tests and the
// local demo run. It is its own module because k8s.io/kubernetes cannot be a
// dependency of the operator's module.
package controlplane

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
