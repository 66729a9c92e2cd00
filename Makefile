# voiceagent-operator. `make help` lists the targets.
IMG ?= voiceagent-operator:dev
LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
CONTROLPLANE_DIR ?= $(LOCALBIN)/controlplane
HELM ?= $(LOCALBIN)/helm
KUSTOMIZE ?= $(LOCALBIN)/kustomize
KUSTOMIZE_VERSION ?= v5.8.2
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
GOLANGCI_LINT_VERSION ?= v2.15.0
KUBE_SCORE ?= $(LOCALBIN)/kube-score
KUBE_SCORE_VERSION ?= v1.20.0
KUBECTL ?= kubectl
CONTAINER_TOOL ?= docker
# Platforms of `make docker-buildx`.
PLATFORMS ?= linux/amd64,linux/arm64
CHART_DIR ?= charts/voiceagent-operator
GO ?= go
TEST_TIMEOUT ?= 20m

.PHONY: all
all: build

##@ General

# The targets with a `## text` comment, under the `##@ Section` headings above them.
.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate CRDs and RBAC from the kubebuilder markers (and refresh the chart's copies).
	$(CONTROLLER_GEN) rbac:roleName=voiceagent-operator crd paths="./api/..." paths="./controllers/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@$(MAKE) --no-print-directory chart-crds chart-files

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## go fmt.
	$(GO) fmt ./...

.PHONY: vet
vet: ## go vet.
	$(GO) vet ./...

.PHONY: lint
lint: golangci-lint ## golangci-lint (.golangci.yml: staticcheck, unused, errorlint, govet, errcheck, ineffassign, gofmt, goimports) over the module and test/promrules.
	@rc=0; \
	echo "== golangci-lint: the operator's module"; $(GOLANGCI_LINT) run ./... || rc=1; \
	echo "== golangci-lint: test/promrules"; (cd test/promrules && $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml ./...) || rc=1; \
	exit $$rc

.PHONY: api-docs
api-docs: ## Generate docs/api-reference.md from the CRDs in config/crd/bases.
	$(GO) run ./hack/apidocs -crds config/crd/bases -out docs/api-reference.md

.PHONY: chart-crds
chart-crds: ## Copy config/crd/bases into the Helm chart's files/crds/ (byte-identical copies, rendered by templates/crds.yaml).
	mkdir -p $(CHART_DIR)/files/crds
	rm -f $(CHART_DIR)/files/crds/*.yaml
	cp config/crd/bases/*.yaml $(CHART_DIR)/files/crds/

.PHONY: chart-files
chart-files: ## Copy the generated RBAC roles and the Prometheus alerts into the chart's files/.
	cp config/rbac/role.yaml $(CHART_DIR)/files/rbac-role.yaml
	cp config/rbac/leader_election_role.yaml $(CHART_DIR)/files/leader-election-role.yaml
	cp config/rbac/metrics_reader_role.yaml $(CHART_DIR)/files/metrics-reader-role.yaml
	cp config/prometheus/rules.yaml $(CHART_DIR)/files/prometheus-rules.yaml

.PHONY: chart-lint
chart-lint: helm ## helm lint --strict the chart.
	$(HELM) lint --strict $(CHART_DIR)

.PHONY: verify-generated
verify-generated: manifests generate ## Fail when generated files (CRDs, RBAC, deep-copy, API reference, the chart's copies) are stale.
	@$(MAKE) --no-print-directory api-docs
	@git diff --exit-code -- config/crd config/rbac api docs/api-reference.md $(CHART_DIR)/files || { echo "generated files are stale: run 'make manifests generate api-docs' (manifests refreshes the chart's copies) and commit"; exit 1; }
	@untracked="$$(git ls-files --others --exclude-standard -- $(CHART_DIR)/files)"; [ -z "$$untracked" ] || { echo "chart copies not committed: $$untracked"; exit 1; }

.PHONY: controlplane
controlplane: ## Build etcd and kube-apiserver for envtest into bin/ (once).
	hack/build-controlplane.sh etcd kube-apiserver

.PHONY: thirdparty-crds
thirdparty-crds: ## Copy the real CRDs of cert-manager and External Secrets into bin/crds.
	hack/thirdparty-crds.sh

.PHONY: helm
helm: ## Build the helm CLI for the chart tests into bin/ (once).
	hack/build-helm.sh

.PHONY: test
test: controlplane thirdparty-crds helm kustomize vet npm-test-deps redis-server ## Unit and envtest integration tests against a real API server, chart and alert tests.
	VOICEAGENT_REQUIRE_NPM=1 KUBEBUILDER_ASSETS=$(CONTROLPLANE_DIR) $(GO) test ./... -count=1 -timeout $(TEST_TIMEOUT)
	cd test/promrules && $(GO) vet ./... && $(GO) test ./... -count=1 -timeout $(TEST_TIMEOUT)

.PHONY: redis-server
redis-server: ## Install the distribution's redis-server (the limit-store tests and benchmark run a real one).
	hack/install-redis.sh

.PHONY: e2e-tools
e2e-tools: ## Build what the e2e cluster needs beyond envtest's binaries (kube-controller-manager, kube-scheduler, kubectl, kwok, External Secrets, cert-manager's controllers), once.
	hack/build-controlplane.sh kube-controller-manager kube-scheduler kubectl
	hack/build-kwok.sh
	hack/build-thirdparty-controllers.sh

.PHONY: test-e2e
test-e2e: ## End-to-end tests on a kwok cluster with the real ESO and cert-manager controllers.
	$(GO) test -tags e2e ./test/e2e/ -count=1 -timeout 30m -v

.PHONY: bench-gateway
bench-gateway: build ## Gateway latency and throughput vs direct vs nginx (apt-get install nginx-light), and allocations per call.
	$(GO) test -run '^$$' -bench BenchmarkProxiedModelCall -benchtime 20000x -count 5 ./internal/gateway/
	$(GO) run ./test/bench/gateway -rate 1000 -duration 10s
	$(GO) run ./test/bench/gateway -throughput 16 -duration 5s

.PHONY: npm-test-deps
npm-test-deps: test/realtime-npm/node_modules/.package-lock.json ## Install the pinned npm packages the realtime SDK test runs (openai, ws).
test/realtime-npm/node_modules/.package-lock.json: test/realtime-npm/package.json test/realtime-npm/package-lock.json
	cd test/realtime-npm && npm ci --no-audit --no-fund --loglevel=error

# Each fuzz target of the parsers of what the agent or an upstream sends, for FUZZTIME:
# a number of runs (5000x), not a duration, since a time limit that ends while the
# fuzzer minimizes a new input fails the run with "context deadline exceeded".
FUZZTIME ?= 5000x
FUZZMINIMIZE ?= 200x
GATEWAY_FUZZ_TARGETS = FuzzUsageScanner FuzzSSERelay FuzzScrubber FuzzPathRefusal FuzzIncludeUsage FuzzRequestModel FuzzAgentToken
# The renderer's, over VoiceAgents the API server admits (judged in-process by the
# CRDs), and audit verify's, over damaged and arbitrary streams.
RENDER_FUZZ_TARGETS = FuzzRender
AUDIT_FUZZ_TARGETS = FuzzVerifyDamage FuzzVerifyRaw

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME (default 5000 runs) each.
	@for f in $(GATEWAY_FUZZ_TARGETS); do \
		echo "== $$f"; $(GO) test ./internal/gateway/ -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) -parallel 2 || exit 1; \
	done
	$(GO) test ./internal/pii/ -run '^$$' -fuzz '^FuzzRedact$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) -parallel 2
	@for f in $(RENDER_FUZZ_TARGETS); do \
		echo "== $$f"; $(GO) test ./internal/render/ -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) -parallel 2 || exit 1; \
	done
	@for f in $(AUDIT_FUZZ_TARGETS); do \
		echo "== $$f"; $(GO) test ./internal/audit/ -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) -parallel 2 || exit 1; \
	done

.PHONY: bench-realtime
bench-realtime: build ## Realtime sessions: 100 sessions, 50 frames/s each way, through the gateway vs a plain Go WebSocket relay vs direct.
	$(GO) run ./test/bench/realtime -sessions 100 -fps 50 -duration 30s

# The operator at N VoiceAgents (env N, default 1000; N=200 for a quick run) on a kwok
# cluster of its own, against a plain 16-worker client creating the same objects.
# MANAGER_ARGS adds manager flags, PROFILE=<dir> writes its CPU and heap profiles.
.PHONY: bench-operator
bench-operator: ## The operator at N VoiceAgents (default 1000) vs a plain client: convergence, requests per VoiceAgent, writes at rest and after a restart, a spec change, RSS, CPU, reconcile p50/p99.
	hack/build-controlplane.sh etcd kube-apiserver kube-controller-manager kube-scheduler kubectl
	hack/build-kwok.sh
	CGO_ENABLED=0 $(GO) build -trimpath -o $(LOCALBIN)/voiceagent-operator ./cmd/voiceagent-operator
	$(GO) build -o $(LOCALBIN)/bench-operator ./test/bench/operator
	$(LOCALBIN)/bench-operator -bin $(LOCALBIN)

.PHONY: bench-audit
bench-audit: ## Verify an audit stream of 100,000 records (must stay well under 2 s).
	$(GO) test -run '^$$' -bench Verify100k -benchmem ./internal/audit/

##@ Demo

.PHONY: demo
demo: ## A kwok cluster with real controllers, the operator and a Ready VoiceAgent.
	hack/demo.sh up

.PHONY: demo-down
demo-down: ## Remove everything `make demo` started.
	hack/demo.sh down

##@ Build

.PHONY: build
build: ## Build the one binary (manager, gateway, audit).
	CGO_ENABLED=0 $(GO) build -trimpath -o $(LOCALBIN)/voiceagent-operator ./cmd/voiceagent-operator

.PHONY: run
run: manifests generate ## Run the manager against the cluster of $KUBECONFIG.
	$(GO) run ./cmd/voiceagent-operator manager --gateway-image $(IMG)

.PHONY: docker-build
docker-build: ## Build the image IMG for this machine's platform (needs a Docker engine).
	$(CONTAINER_TOOL) build -t $(IMG) .

# The Dockerfile builds on the build machine's platform (FROM --platform=$BUILDPLATFORM
# is inserted into a copy, Dockerfile.cross) and cross-compiles for each target
# (TARGETOS/TARGETARCH): no emulation.
.PHONY: docker-buildx
docker-buildx: ## Build the image IMG for PLATFORMS and push it (needs Docker buildx and a registry you are logged in to).
	sed -e '1 s/\(^FROM\)/FROM --platform=\$$\{BUILDPLATFORM\}/; t' -e ' 1,// s//FROM --platform=\$$\{BUILDPLATFORM\}/' Dockerfile > Dockerfile.cross
	- $(CONTAINER_TOOL) buildx create --name voiceagent-operator-builder
	$(CONTAINER_TOOL) buildx use voiceagent-operator-builder
	- $(CONTAINER_TOOL) buildx build --push --platform=$(PLATFORMS) --tag $(IMG) -f Dockerfile.cross .
	- $(CONTAINER_TOOL) buildx rm voiceagent-operator-builder
	rm Dockerfile.cross

.PHONY: build-installer
build-installer: manifests generate kustomize ## Render dist/install.yaml: CRDs, RBAC, the manager (image IMG, also the gateways') and its metrics Service, in one file.
	@mkdir -p dist
	KUSTOMIZE=$(KUSTOMIZE) hack/installer.sh "$(IMG)" > dist/install.yaml
	@echo "dist/install.yaml: kubectl apply --server-side -f dist/install.yaml"

##@ Deployment

ifndef ignore-not-found
  ignore-not-found = false
endif

.PHONY: install
install: manifests ## Install the CRDs into the cluster of $KUBECONFIG.
	$(KUBECTL) apply --server-side -k config/crd

.PHONY: uninstall
uninstall: ## Remove the CRDs, and so every VoiceAgent and AuditSink (ignore-not-found=true: no error for what is gone).
	$(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -k config/crd

.PHONY: deploy
deploy: manifests kustomize ## Deploy the CRDs and the operator, image IMG (also the gateways'), to the cluster of $KUBECONFIG.
	KUSTOMIZE=$(KUSTOMIZE) hack/installer.sh "$(IMG)" | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: kustomize ## Remove what deploy applied, the CRDs included, and so every VoiceAgent and AuditSink (ignore-not-found=true: no error for what is gone).
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -f -

##@ Tools

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

# kustomize at KUSTOMIZE_VERSION into bin/ (once; a binary of another version is replaced).
.PHONY: kustomize
kustomize: ## Build kustomize into bin/ (once), for build-installer, deploy and undeploy.
	@[ -x "$(KUSTOMIZE)" ] && [ "$$(cat $(LOCALBIN)/.kustomize-version 2>/dev/null)" = "$(KUSTOMIZE_VERSION)" ] || { \
	  echo ">> building kustomize $(KUSTOMIZE_VERSION) into $(LOCALBIN)" >&2; \
	  GOBIN=$(LOCALBIN) GOFLAGS=-buildvcs=false CGO_ENABLED=0 $(GO) install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION) && \
	  echo "$(KUSTOMIZE_VERSION)" > $(LOCALBIN)/.kustomize-version; }

# golangci-lint at GOLANGCI_LINT_VERSION into bin/ (once; a binary of another version is replaced).
.PHONY: golangci-lint
golangci-lint: ## Build golangci-lint into bin/ (once), for lint.
	@[ -x "$(GOLANGCI_LINT)" ] && [ "$$(cat $(LOCALBIN)/.golangci-lint-version 2>/dev/null)" = "$(GOLANGCI_LINT_VERSION)" ] || { \
	  echo ">> building golangci-lint $(GOLANGCI_LINT_VERSION) into $(LOCALBIN)" >&2; \
	  GOBIN=$(LOCALBIN) GOFLAGS=-buildvcs=false CGO_ENABLED=0 $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) && \
	  echo "$(GOLANGCI_LINT_VERSION)" > $(LOCALBIN)/.golangci-lint-version; }

# kube-score at KUBE_SCORE_VERSION into bin/ (once; a binary of another version is replaced).
.PHONY: kube-score
kube-score: ## Build kube-score into bin/ (once), for test/kubescore (its CRITICALs on the rendered objects, against an allow-list).
	@[ -x "$(KUBE_SCORE)" ] && [ "$$(cat $(LOCALBIN)/.kube-score-version 2>/dev/null)" = "$(KUBE_SCORE_VERSION)" ] || { \
	  echo ">> building kube-score $(KUBE_SCORE_VERSION) into $(LOCALBIN)" >&2; \
	  GOBIN=$(LOCALBIN) GOFLAGS=-buildvcs=false CGO_ENABLED=0 $(GO) install github.com/zegl/kube-score/cmd/kube-score@$(KUBE_SCORE_VERSION) && \
	  echo "$(KUBE_SCORE_VERSION)" > $(LOCALBIN)/.kube-score-version; }

# make test runs test/kubescore, which skips without the binary: build it first.
test: kube-score
