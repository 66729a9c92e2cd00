//go:build linux && (amd64 || arm64) && !race

package rawio

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// The raw path is the one in use on this build, and a call allocates nothing.
func TestRawPathIsUsedAndAllocatesNothing(t *testing.T) {
	c, peer := tcpPair(t)
	if _, ok := c.(*Conn); !ok {
		t.Fatalf("Wrap returned %T, want *rawio.Conn", c)
	}
	msg, buf := []byte("0123456789"), make([]byte, 10)
	if allocs := testing.AllocsPerRun(200, func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	}); allocs > 0 {
		t.Errorf("%.1f allocations per round trip", allocs)
	}

	f, err := os.Create(filepath.Join(t.TempDir(), "seg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, _ := NewFileWriter(f)
	p, _ := NewPath(f.Name())
	if allocs := testing.AllocsPerRun(200, func() {
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.Stat(); err != nil {
			t.Fatal(err)
		}
	}); allocs > 0 {
		t.Errorf("%.1f allocations per file write and stat", allocs)
	}
}
