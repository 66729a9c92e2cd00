package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/voiceagent-dev/voiceagent-operator/internal/gateway"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// gatewayFlags are the gateway subcommand's flags. Role "gateway" is the proxy holding
// the provider credentials, in its own pods; role "inbound" is the credential-free TLS
// terminator left in the agent's pod.
type gatewayFlags struct {
	role           string
	config         string
	terminationLog string
	inbound        gateway.InboundOptions
}

// Flags of one role only: given to the other, they would be ignored, and a pod spec
// that sets them means something it does not get.
var (
	gatewayOnlyFlags = []string{"config", "termination-log"}
	inboundOnlyFlags = []string{"listen", "tls-dir", "upstream", "admin"}
)

func parseGatewayFlags(args []string) (gatewayFlags, error) {
	var f gatewayFlags
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.StringVar(&f.role, "role", "gateway", `"gateway" (the proxy that holds the credentials) or "inbound" (TLS in front of the agent, in its pod, with no credential)`)
	fs.StringVar(&f.config, "config", "/etc/voiceagent/gateway/gateway.json", "role gateway: the gateway configuration rendered by the operator")
	fs.StringVar(&f.terminationLog, "termination-log", "", "role gateway: where the count of audit records left undelivered at exit is written (in a pod, the kubelet's termination message, /dev/termination-log; empty: nowhere)")
	listen := fs.String("listen", fmt.Sprintf(":%d", gw.TLSPort), "role inbound: the TLS address the agent's Service reaches")
	tlsDir := fs.String("tls-dir", gw.TLSDir, "role inbound: the directory of the serving certificate (tls.crt, tls.key)")
	upstream := fs.String("upstream", "127.0.0.1:8080", "role inbound: the agent on loopback")
	admin := fs.String("admin", fmt.Sprintf(":%d", gw.AdminPort), "role inbound: /healthz and /readyz")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var foreign []string
	switch f.role {
	case "gateway":
		foreign = inboundOnlyFlags
	case "inbound":
		foreign = gatewayOnlyFlags
	default:
		return f, fmt.Errorf("--role %q: must be gateway or inbound", f.role)
	}
	var err error
	fs.Visit(func(fl *flag.Flag) {
		if err == nil && slices.Contains(foreign, fl.Name) {
			err = fmt.Errorf("--%s does not apply to --role %s", fl.Name, f.role)
		}
	})
	f.inbound = gateway.InboundOptions{Listen: *listen, CertFile: filepath.Join(*tlsDir, "tls.crt"), KeyFile: filepath.Join(*tlsDir, "tls.key"),
		Upstream: *upstream, Admin: *admin}
	return f, err
}

func runGateway(args []string) error {
	f, err := parseGatewayFlags(args)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if f.role == "inbound" {
		f.inbound.Logger = logger
		return gateway.RunInbound(ctx, f.inbound)
	}
	g, err := gateway.New(gateway.Options{ConfigPath: f.config, PodName: os.Getenv("POD_NAME"), Logger: logger, TerminationLog: f.terminationLog})
	if err != nil {
		return err
	}
	return g.Run(ctx)
}
