//go:build tools

// Package tools pins the etcd server the tests run under kube-apiserver. It is
// its own module because etcd's grpc/otel versions differ from Kubernetes'.
// Test infrastructure only; nothing here ships in the product.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
