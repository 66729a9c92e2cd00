// Command voiceagent-operator is the one binary of the project. Its subcommands:
//
//	manager   run the operator
//	gateway   run a VoiceAgent's gateway (or, --role inbound, the TLS terminator in its agent pods)
//	audit     audit trail tools (verify)
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "manager":
		err = runManager(os.Args[2:])
	case "gateway":
		err = runGateway(os.Args[2:])
	case "audit":
		os.Exit(runAudit(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	case "-h", "--help", "help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "unknown subcommand %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: voiceagent-operator <subcommand> [flags]

subcommands:
  manager   run the operator (reconciles VoiceAgents and AuditSinks)
  gateway   run a VoiceAgent's gateway: --config FILE (or --role inbound: TLS in front of the agent)
  audit     verify [--hmac-key-file F | --ed25519-public-key-file F] [FILE|-]
            check an audit record stream; exit 0 intact, 1 tampered, 2 not verified`)
}
