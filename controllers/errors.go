package controllers

import (
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
)

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

// isNoKind is true when the kind's CRD is not installed.
func isNoKind(err error) bool { return meta.IsNoMatchError(err) }

func isAlreadyExists(err error) bool { return apierrors.IsAlreadyExists(err) }
