//go:build tools

// Package tools keeps the Kubernetes commands that build.sh compiles in go.mod and go.sum
// (go mod tidy drops modules that no package of this module imports).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
