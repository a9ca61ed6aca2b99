//go:build tools

// Package tools pins the Kubernetes components the tests run: kube-apiserver,
// kube-controller-manager, kubectl, kube-scheduler and kubelet, all
// built from k8s.io/kubernetes at the version in go.mod. Test infrastructure
// only; nothing here ships in the product.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
