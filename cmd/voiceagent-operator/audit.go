package main

import (
	"crypto/ed25519"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/voiceagent-dev/voiceagent-operator/internal/audit"
)

// Exit codes of "audit verify".
const (
	exitVerified = 0 // the stream is intact
	exitTampered = 1 // the stream is damaged: the verdict names the first bad seq
	exitUsage    = 2 // bad arguments, unreadable key or input: nothing was verified
)

// runAudit runs "audit <tool>"; it returns the process exit code.
func runAudit(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, "usage: voiceagent-operator audit verify [--hmac-key-file F | --ed25519-public-key-file F] [--allow-unsealed-tail] [--from-any-seq] [FILE|-]")
		return exitUsage
	}
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hmacFile := fs.String("hmac-key-file", "", "HMAC-SHA256 checkpoint key (the file's content, white space trimmed)")
	pubFile := fs.String("ed25519-public-key-file", "", "Ed25519 public key: PEM PUBLIC KEY or 32 raw bytes")
	allowTail := fs.Bool("allow-unsealed-tail", false, "accept records after the last checkpoint (a live stream)")
	fromAny := fs.Bool("from-any-seq", false, "accept a stream that starts mid-chain (a sink added later)")
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(stderr, "error: at most one input file")
		return exitUsage
	}
	opts := audit.VerifyOptions{AllowUnsealedTail: *allowTail, FromAnySeq: *fromAny}
	switch {
	case *hmacFile != "" && *pubFile != "":
		fmt.Fprintln(stderr, "error: give --hmac-key-file or --ed25519-public-key-file, not both")
		return exitUsage
	case *hmacFile != "":
		key, err := audit.ReadHMACKeyFile(*hmacFile)
		if err != nil {
			fmt.Fprintln(stderr, "error:", err)
			return exitUsage
		}
		opts.HMACKey = key
	case *pubFile != "":
		pub, err := readPublicKey(*pubFile)
		if err != nil {
			fmt.Fprintln(stderr, "error:", err)
			return exitUsage
		}
		opts.Ed25519PublicKey = pub
	}
	in := stdin
	if name := fs.Arg(0); name != "" && name != "-" {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(stderr, "error:", err)
			return exitUsage
		}
		defer func() { _ = f.Close() }() // read only
		in = f
	}
	rep, err := audit.Verify(in, opts)
	if err != nil {
		fmt.Fprintln(stderr, "error: reading the stream:", err)
		return exitUsage
	}
	fmt.Fprintln(stdout, rep.String())
	if !rep.OK {
		return exitTampered
	}
	return exitVerified
}

func readPublicKey(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key file %s: not readable", path)
	}
	pub, err := audit.ParseEd25519PublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("public key file %s: %w", path, err)
	}
	return pub, nil
}
