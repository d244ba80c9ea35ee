//go:build tools

// Package tools keeps the packages behind the built commands in go.mod/go.sum,
// so `go mod tidy` records every checksum the build needs.
package tools

import (
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
)
