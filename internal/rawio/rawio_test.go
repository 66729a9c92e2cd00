package rawio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection, the first wrapped.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	w := Wrap(c)
	t.Cleanup(func() { w.Close(); peer.Close() })
	return w, peer
}

func TestConnCarriesBytesBothWaysAtOnce(t *testing.T) {
	c, peer := tcpPair(t)
	// 8 MiB each way, both at once: more than the socket buffers hold, so writes meet
	// EAGAIN and must wait for the reader, while the same connection is being read.
	out, back := make([]byte, 8<<20), make([]byte, 8<<20)
	_, _ = rand.Read(out)
	_, _ = rand.Read(back)
	var wg sync.WaitGroup
	var gotAtPeer, gotAtConn []byte
	var errs [4]error
	wg.Add(4)
	go func() { defer wg.Done(); _, errs[0] = c.Write(out) }()
	go func() { defer wg.Done(); gotAtPeer, errs[1] = readN(peer, len(out)) }()
	go func() { defer wg.Done(); _, errs[2] = peer.Write(back) }()
	go func() { defer wg.Done(); gotAtConn, errs[3] = readN(c, len(back)) }()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if !bytes.Equal(gotAtPeer, out) || !bytes.Equal(gotAtConn, back) {
		t.Fatal("bytes changed on the way")
	}
}

func readN(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, n)
	_, err := io.ReadFull(r, buf)
	return buf, err
}

func TestConnErrorsAreNets(t *testing.T) {
	t.Run("end of stream is io.EOF", func(t *testing.T) {
		c, peer := tcpPair(t)
		_ = peer.(*net.TCPConn).CloseWrite()
		if n, err := c.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Fatalf("got %d, %v; want 0, io.EOF", n, err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		c, _ := tcpPair(t)
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := c.Read(make([]byte, 10))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("got %v; want a timeout net.Error wrapping os.ErrDeadlineExceeded", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		c, _ := tcpPair(t)
		c.Close()
		if _, err := c.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write after close: %v", err)
		}
	})
	t.Run("peer gone is an error, not a signal", func(t *testing.T) {
		c, peer := tcpPair(t)
		_ = peer.(*net.TCPConn).SetLinger(0)
		peer.Close() // a reset
		deadline := time.Now().Add(10 * time.Second)
		var err error
		for err == nil && time.Now().Before(deadline) {
			_, err = c.Write(make([]byte, 64<<10))
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "write" ||
			!(errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("write to a reset connection: %v", err)
		}
	})
	t.Run("CloseWrite is the TCPConn's", func(t *testing.T) {
		c, peer := tcpPair(t)
		cw, ok := c.(interface{ CloseWrite() error })
		if !ok {
			t.Fatal("wrapped connection has no CloseWrite")
		}
		if err := cw.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("peer after CloseWrite: %v", err)
		}
	})
}

func TestWrapLeavesOtherConnsAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("a pipe was wrapped")
	}
}

func TestFileWriterAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seg")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := NewFileWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"one\n", "two\n", ""} {
		if n, err := w.Write([]byte(line)); err != nil || n != len(line) {
			t.Fatalf("write %q: %d, %v", line, n, err)
		}
	}
	if got, _ := os.ReadFile(path); string(got) != "one\ntwo\n" {
		t.Fatalf("file holds %q", got)
	}

	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	w, err = NewFileWriter(ro)
	if err != nil {
		t.Fatal(err)
	}
	var pe *os.PathError
	if _, err := w.Write([]byte("x")); !errors.As(err, &pe) || pe.Path != path {
		t.Fatalf("write to a read-only file: %v; want a *os.PathError naming it", err)
	}
}

func TestPathStatFollowsASwappedSymlink(t *testing.T) {
	// The layout of a Kubernetes Secret volume: key -> ..data/key, ..data -> a
	// timestamped directory, replaced by renaming a new symlink over ..data.
	dir := t.TempDir()
	for i, content := range []string{"first", "second key"} {
		ts := filepath.Join(dir, "ts"+string(rune('0'+i)))
		if err := os.Mkdir(ts, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ts, "key"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("ts0", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/key", filepath.Join(dir, "key")); err != nil {
		t.Fatal(err)
	}
	p, err := NewPath(filepath.Join(dir, "key"))
	if err != nil {
		t.Fatal(err)
	}
	check := func(wantSize int64) {
		t.Helper()
		mod, size, err := p.Stat()
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join(dir, "key"))
		if err != nil {
			t.Fatal(err)
		}
		if size != wantSize || size != st.Size() || !mod.Equal(st.ModTime()) {
			t.Fatalf("Stat: %v %d; os.Stat: %v %d; want size %d", mod, size, st.ModTime(), st.Size(), wantSize)
		}
	}
	check(int64(len("first")))
	if err := os.Symlink("ts1", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	check(int64(len("second key")))

	missing, _ := NewPath(filepath.Join(dir, "nope"))
	if _, _, err := missing.Stat(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := NewPath("a\x00b"); err == nil {
		t.Fatal("a name with a NUL byte was accepted")
	}
}
