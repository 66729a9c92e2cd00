// Package audit is the gateway's tamper-evident audit trail: a hash chain of records,
// periodically sealed by signed checkpoints, kept in a durable bounded on-disk queue and
// delivered at least once to every configured sink.
//
// # Record format and canonical bytes
//
// Every record is one line of JSON, written by this package with its fields in this
// fixed order and no insignificant whitespace:
//
//	{"seq":N,"instance":"I","prev":"H","kind":"K","time":"T"[,"droppedBefore":D][,"payload":P][,"checkpoint":C]}
//
// where
//
//   - seq: 1, 2, 3, ... per instance, without gaps.
//   - instance: the writer's identity, "<pod name>/<boot id>", where the boot id is 16
//     random hex digits persisted in the queue directory, so that a restarted gateway
//     continues its chain. Only [A-Za-z0-9._:/-] is used, so the string has no escapes.
//   - prev: lower-case hex SHA-256 of the canonical bytes of the record with seq N-1 of
//     the same instance; 64 zeros for seq 1.
//   - kind: "record" (a payload) or "checkpoint".
//   - time: when the record was appended, UTC, RFC 3339 with exactly 6 fractional
//     digits (the syslog TIMESTAMP format of RFC 5424).
//   - droppedBefore: with FailOpen, how many records could not be kept since the last
//     record that was.
//   - payload: the caller's JSON object (for the gateway, one call).
//   - checkpoint: {"seq":S,"hash":"H","alg":"A","sig":"X"} where S = N-1 and H = prev:
//     the checkpoint seals every record of the instance up to S.
//
// The canonical bytes of a record are the line exactly as written, without its
// trailing newline. Its hash is SHA-256 over those bytes. Verifiers hash what they
// read; they never re-encode, so any change of a byte shows.
//
// # Checkpoint signatures
//
// The signed message is the UTF-8 text
//
//	"voiceagent-audit-checkpoint/v1\n" + instance + "\n" + decimal S + "\n" + H
//
// and alg is one of:
//
//   - "HMAC-SHA256": sig is hex HMAC-SHA256 of the message. The key is the key file's
//     content with surrounding white space removed (so "echo key > file" works); use a
//     long random text key, e.g. 64 hex digits.
//   - "Ed25519": sig is the hex Ed25519 signature of the message. The private key file is
//     PEM "PRIVATE KEY" (PKCS #8, as "openssl genpkey -algorithm ed25519" writes it), or
//     exactly 32 raw bytes (the seed) or 64 raw bytes (seed and public key). Verifiers
//     take the public key as PEM "PUBLIC KEY" (PKIX) or 32 raw bytes.
//   - "none": no key was configured. The chain still shows gaps, reordering and edits,
//     but not a rewritten or extended stream; a verifier given a key rejects it.
//
// A checkpoint is written every CheckpointEvery records, every CheckpointInterval while
// records are unsealed, and when the log is closed. Records after an instance's last
// checkpoint are unsealed: a verifier cannot tell them from records appended by someone
// without the key, and reports them as a truncated stream unless told to accept an
// unsealed tail (a live stream always has one).
//
// # Durability
//
// By default (Options.SyncInterval zero) Append returns once the record is written and
// fsynced (group commit: concurrent appenders share one fsync), so an appended record
// survives a crash of the process or the machine. With a positive SyncInterval, Append
// returns once the record is written (it survives the process) and a background group
// fsync runs every SyncInterval; delivery reads only fsynced records. The queue is segment files of records (seg-<first seq>.jsonl) and one
// cursor file per sink holding the last seq it acknowledged. Cursors are replaced by
// rename without fsync: a crash can only move a cursor back, which redelivers records,
// never skips them (at-least-once). A segment is deleted once every sink has passed it.
package audit
