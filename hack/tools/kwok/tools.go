//go:build tools

// Package tools keeps kwok's command in go.mod/go.sum.
package tools

import (
	_ "sigs.k8s.io/kwok/pkg/kwok/cmd"
)
