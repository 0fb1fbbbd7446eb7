# chaosguard — every target does its own set-up; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.installed-$(shell cat pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)
PYTEST_ARGS ?=
ONLY ?=

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
	  /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Set-up (each is idempotent and run by the targets that need it)

$(VENV_STAMP): pyproject.toml
	@echo "[setup] Python virtualenv in $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

.PHONY: venv
venv: $(VENV_STAMP) ## Create the virtualenv and install chaosguard with its dev tools.

.PHONY: system-deps
system-deps: ## Install the Debian packages the tests need (Prometheus, QEMU, containerd, runc, CNI, buildah...).
	@bash hack/install-system-deps.sh

.PHONY: control-plane
control-plane: ## Build kube-apiserver, controller-manager, scheduler, kubectl, kubelet, kube-proxy, etcd, kwok, helm (cached).
	@bash hack/build-control-plane.sh >/dev/null

.PHONY: images
images: system-deps ## Build the real node's images with buildah, no Docker: pause, the e2e app, the operator, the injector (cached).
	@bash hack/build-images.sh >/dev/null

.PHONY: setup
setup: venv system-deps control-plane images ## All of the above.

##@ Development

.PHONY: test
test: setup ## Every check and test: lint, CRD sync, unit, integration, e2e (operator installed on a real node).
	@$(MAKE) --no-print-directory lint check-crds
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: unit
unit: venv ## Run only the unit tests (pure logic, no cluster).
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: e2e
e2e: setup ## Run only tests/e2e: a real node here, the operator's image installed with Helm, then kustomize.
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

.PHONY: lint
lint: venv ## ruff, mypy (strict) and the import contracts of the layers (.importlinter).
	$(BIN)/ruff check operator localcluster tests bench
	$(BIN)/ruff format --check operator localcluster tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: fmt
fmt: venv ## Format and auto-fix.
	$(BIN)/ruff format operator localcluster tests bench
	$(BIN)/ruff check --fix operator localcluster tests bench

.PHONY: crds
crds: venv ## Regenerate crds/ from the pydantic models (and the Helm chart's copy).
	$(BIN)/chaosguard crds --out crds
	@$(MAKE) --no-print-directory helm-sync

HELM_CHART := deploy/helm/chaosguard

.PHONY: helm-sync
helm-sync: ## Copy crds/, deploy/base/{rbac,webhooks,status-policy}.yaml and deploy/monitoring/ into the Helm chart (tests check that they match).
	rm -f $(HELM_CHART)/crds/*.yaml
	cp crds/chaosguard.dev_*.yaml $(HELM_CHART)/crds/
	cp deploy/base/rbac.yaml deploy/base/webhooks.yaml deploy/base/status-policy.yaml $(HELM_CHART)/files/
	cp deploy/monitoring/chaosguard-rules.yaml deploy/monitoring/chaosguard-dashboard.json $(HELM_CHART)/files/

.PHONY: check-crds
check-crds: venv ## Fail when crds/ differs from the models.
	$(BIN)/chaosguard crds --check crds

##@ Run

.PHONY: demo
demo: setup ## Start a local control plane and the operator, apply an example, show its status.
	$(BIN)/python -m bench.demo

.PHONY: bench
bench: setup ## Benchmarks; prints `BENCH <name> <value> <unit>` lines (ONLY=<name> runs one).
	$(BIN)/python -m bench.run $(if $(ONLY),--only $(ONLY),)

SANDBOX_DIR ?= .work/sandbox

.PHONY: sandbox
sandbox: setup ## A cluster to try chaosguard by hand: control plane, real node, Prometheus, the operator (Helm).
	@mkdir -p $(SANDBOX_DIR)
	@if [ -f $(SANDBOX_DIR)/pid ] && kill -0 "$$(cat $(SANDBOX_DIR)/pid)" 2>/dev/null; then \
	  echo "[sandbox] already running (make sandbox-down stops it)"; \
	else \
	  echo "[sandbox] starting; log: $(SANDBOX_DIR)/sandbox.log"; \
	  nohup $(BIN)/python -m localcluster.sandbox up --dir $(SANDBOX_DIR) >$(SANDBOX_DIR)/sandbox.log 2>&1 & \
	  echo $$! >$(SANDBOX_DIR)/pid; \
	fi
	@$(BIN)/python -m localcluster.sandbox wait --dir $(SANDBOX_DIR)

.PHONY: sandbox-down
sandbox-down: venv ## Stop the sandbox and remove everything it made.
	@$(BIN)/python -m localcluster.sandbox down --dir $(SANDBOX_DIR)

##@ Users' CI (kind; needs Docker, so it does not run on the development machines)

KIND_CLUSTER ?= chaosguard-e2e
IMAGE ?= chaosguard:dev
INJECTOR_IMAGE ?= chaosguard-injector:dev
STRESSOR_IMAGE ?= chaosguard-stressor:dev
PLATFORMS ?= linux/amd64,linux/arm64

.PHONY: image
image: ## Build the operator, injector and stressor images and the e2e tests' app image (Docker).
	DOCKER_BUILDKIT=1 docker build -t $(IMAGE) -f deploy/Dockerfile .
	DOCKER_BUILDKIT=1 docker build --target injector -t $(INJECTOR_IMAGE) -f deploy/Dockerfile.injector .
	DOCKER_BUILDKIT=1 docker build --target stressor -t $(STRESSOR_IMAGE) -f deploy/Dockerfile.injector .
	docker build -t chaosguard-e2e-app:dev tests/e2e/app

.PHONY: image-multiarch
image-multiarch: ## Build the operator, injector and stressor images for linux/amd64 and linux/arm64 (PLATFORMS=; a buildx builder with QEMU; PUSH=1 pushes).
	docker buildx build --platform $(PLATFORMS) -t $(IMAGE) -f deploy/Dockerfile $(if $(PUSH),--push,) .
	docker buildx build --platform $(PLATFORMS) --target injector -t $(INJECTOR_IMAGE) -f deploy/Dockerfile.injector $(if $(PUSH),--push,) .
	docker buildx build --platform $(PLATFORMS) --target stressor -t $(STRESSOR_IMAGE) -f deploy/Dockerfile.injector $(if $(PUSH),--push,) .

.PHONY: e2e-kind
e2e-kind: venv image ## Create a kind cluster, load the image, install CRDs and the operator, run tests/e2e.
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --name $(KIND_CLUSTER) --config deploy/kind/cluster.yaml
	kind load docker-image $(IMAGE) $(INJECTOR_IMAGE) $(STRESSOR_IMAGE) chaosguard-e2e-app:dev --name $(KIND_CLUSTER)
	kubectl apply --server-side -k crds  # first: deploy/base has a ChaosPolicy, which needs its CRD
	kubectl wait --for=condition=Established --timeout=60s \
	  crd/chaosexperiments.chaosguard.dev crd/chaospolicies.chaosguard.dev crd/chaosapprovals.chaosguard.dev
	kubectl apply --server-side -k deploy/overlays/kind
	kubectl -n chaosguard-system rollout status deployment/chaosguard --timeout=180s
	$(BIN)/pytest tests/e2e --e2e $(PYTEST_ARGS)

.PHONY: e2e-kind-down
e2e-kind-down: ## Delete the kind cluster.
	kind delete cluster --name $(KIND_CLUSTER)
