package main

import (
	"context"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// The managers run with leader election, as they do in a cluster, so that a restart is a
// hand-over: the new manager waits as a standby until the old one has stepped down.
const (
	leaseNamespace = "default"
	leaseName      = "voiceagent-operator.voiceagent.dev"
)

// leaseWrites counts the writes of the manager's leader election Lease as the API server
// reports them (a watch event per write that changed it: every renewal changes renewTime).
// The manager's rest_client_requests_total counts those PUTs with its reconciles' requests,
// by method and no resource; the bench leaves PUTs out of the manager's writes (the operator
// makes none) and shows them beside this count, which they should equal.
type leaseWrites struct{ n atomic.Int64 }

func watchLease(ctx context.Context, cs kubernetes.Interface) *leaseWrites {
	lw := &leaseWrites{}
	go func() {
		// The first watch starts before any manager has made the Lease, so its ADDED is the
		// create; a watch started again from scratch lists the Lease as ADDED without a write.
		rv, first := "", true
		for ctx.Err() == nil {
			fromScratch := rv == "" && !first
			first = false
			w, err := cs.CoordinationV1().Leases(leaseNamespace).Watch(ctx, metav1.ListOptions{
				FieldSelector:   fields.OneTermEqualSelector("metadata.name", leaseName).String(),
				ResourceVersion: rv, AllowWatchBookmarks: true,
			})
			if err != nil {
				rv = "" // too old, or the API server is restarting: start again from now
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					rv = "" // expired: the next watch starts from scratch
					continue
				}
				l, ok := ev.Object.(*coordinationv1.Lease)
				if !ok {
					continue
				}
				rv = l.ResourceVersion
				if ev.Type == watch.Modified || ev.Type == watch.Added && !fromScratch {
					lw.n.Add(1)
				}
			}
			w.Stop()
		}
	}()
	return lw
}

func (lw *leaseWrites) count() float64 { return float64(lw.n.Load()) }
