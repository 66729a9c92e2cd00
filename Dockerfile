# One image, three roles: `manager` (the operator), `gateway` (the sidecar of every
# VoiceAgent pod) and `audit` (trail verification). The operator passes its own image
# as the gateway's, so the two never drift in version.
#
# Base images: golang:1.26 is pinned by tag only. No digest was recorded for it in this
# repository, and this build machine has no Docker engine or registry access to read
# one; pin it (golang:1.26@sha256:<index digest>) where the image is built and
# published. The final stage is `scratch`, which is no image and has no digest.
FROM golang:1.26 AS build
# Set by BuildKit (docker buildx, `make docker-buildx`) to each target platform; the
# build stage itself runs on the build machine's platform and cross-compiles.
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} go build -trimpath -ldflags='-s -w' -o /voiceagent-operator ./cmd/voiceagent-operator

# Distroless-style final stage: no shell, no package manager, only the static binary,
# the CA bundle for upstream TLS, and the non-root user 65532.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /voiceagent-operator /voiceagent-operator
USER 65532:65532
ENTRYPOINT ["/voiceagent-operator"]
