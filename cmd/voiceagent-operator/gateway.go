package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/voiceagent-dev/voiceagent-operator/internal/gateway"
)

func runGateway(args []string) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	configPath := fs.String("config", "/etc/voiceagent/gateway/gateway.json", "the gateway configuration rendered by the operator")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	g, err := gateway.New(gateway.Options{ConfigPath: *configPath, PodName: os.Getenv("POD_NAME"), Logger: logger})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return g.Run(ctx)
}
