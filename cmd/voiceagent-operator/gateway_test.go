package main

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

func TestGatewayFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, f gatewayFlags)
	}{
		{"defaults", nil, "", func(t *testing.T, f gatewayFlags) {
			if f.role != "gateway" || f.config != "/etc/voiceagent/gateway/gateway.json" {
				t.Errorf("%+v", f)
			}
		}},
		{"inbound defaults", []string{"--role", "inbound"}, "", func(t *testing.T, f gatewayFlags) {
			in := f.inbound
			if in.Listen != ":8443" || in.Admin != ":15020" || in.Upstream != "127.0.0.1:8080" ||
				in.CertFile != gw.TLSDir+"/tls.crt" || in.KeyFile != gw.TLSDir+"/tls.key" {
				t.Errorf("%+v", in)
			}
		}},
		{"inbound set", []string{"--role=inbound", "--listen=:9443", "--tls-dir=/certs", "--upstream=127.0.0.1:3000", "--admin=:9020"}, "", func(t *testing.T, f gatewayFlags) {
			in := f.inbound
			if in.Listen != ":9443" || in.Admin != ":9020" || in.Upstream != "127.0.0.1:3000" || in.CertFile != "/certs/tls.crt" {
				t.Errorf("%+v", in)
			}
		}},
		{"unknown role", []string{"--role", "sidecar"}, `--role "sidecar": must be gateway or inbound`, nil},
		{"inbound flag for the gateway", []string{"--listen", ":9443"}, "--listen does not apply to --role gateway", nil},
		{"config for inbound", []string{"--role", "inbound", "--config", "/x"}, "--config does not apply to --role inbound", nil},
		{"stray argument", []string{"--role", "inbound", "extra"}, "unexpected arguments", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parseGatewayFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, f)
		})
	}
}

// TestInboundRoleExitsZeroOnSIGTERM: the real binary in the inbound role needs no
// configuration file, serves its health port, and exits 0 on SIGTERM (a native sidecar
// is stopped that way once the agent has exited).
func TestInboundRoleExitsZeroOnSIGTERM(t *testing.T) {
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	admin := free()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "VOICEAGENT_OPERATOR_RUN_MAIN=1", "VOICEAGENT_OPERATOR_ARGS=gateway --role inbound --listen "+free()+
		" --admin "+admin+" --tls-dir "+t.TempDir()+" --upstream 127.0.0.1:1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("the inbound role exited: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("health port never answered\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling interval, within the deadline
	}
	// Without its certificate it is alive, and not ready.
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("readyz without a certificate: %d", resp.StatusCode)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("no exit within 15s of SIGTERM")
	}
}
