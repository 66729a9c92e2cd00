# One image, three roles: `manager` (the operator), `gateway` (the sidecar of every
# VoiceAgent pod) and `audit` (trail verification). The operator passes its own image
# as the gateway's, so the two never drift in version.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /voiceagent-operator ./cmd/voiceagent-operator

# Distroless-style final stage: no shell, no package manager, only the static binary,
# the CA bundle for upstream TLS, and the non-root user 65532.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /voiceagent-operator /voiceagent-operator
USER 65532:65532
ENTRYPOINT ["/voiceagent-operator"]
