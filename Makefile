# byoc-operator: the two commands are `make run` and `make test`; the rest are their parts.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Builds and the control-plane binaries are cached outside the repo when CI sets these.
export CARGO_TARGET_DIR ?= $(CURDIR)/target
E2E_THREADS ?= 2

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: run
run: ## The operator on a local cluster: pods on a node from its images and chart, or host processes (BYOC_RUN=host); Ctrl-C stops all
	hack/run.sh

.PHONY: test
test: fmt-check lint crds-check unit fuzz e2e e2e-node chart-test ## Everything CI checks

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all
	$(CARGO) fmt --all --manifest-path fuzz/Cargo.toml

.PHONY: fmt-check
fmt-check: ## Fail when the code is not formatted
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --all --manifest-path fuzz/Cargo.toml -- --check

.PHONY: lint
lint: ## clippy on every crate and target (the fuzz workspace too), warnings denied
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) clippy --manifest-path fuzz/Cargo.toml --all-targets --locked -- -D warnings

CRDS := byocgrants byocrequests

.PHONY: crds
crds: ## Regenerate crds/ from the Rust types
	@for crd in $(CRDS); do \
	  $(CARGO) run --quiet --locked -p byoc-api --bin crdgen -- $$crd > crds/$$crd.yaml || exit 1; \
	done

.PHONY: crds-check
crds-check: ## Fail when crds/ differs from what the Rust types generate
	@for crd in $(CRDS); do \
	  $(CARGO) run --quiet --locked -p byoc-api --bin crdgen -- $$crd | diff -u crds/$$crd.yaml - \
	    || { echo "crds/$$crd.yaml is stale or was edited by hand: run 'make crds' and commit it" >&2; exit 1; }; \
	done

.PHONY: unit
unit: ## Unit and integration tests that need no cluster
	$(CARGO) test --workspace --exclude byoc-e2e --locked

.PHONY: fuzz
fuzz: ## Every fuzz target for FUZZ_SECONDS (default 20) each; nightly + cargo-fuzz (fuzz/README.md)
	hack/fuzz.sh

.PHONY: control-plane
control-plane: ## Build (once; cached) etcd, kube-apiserver, kube-controller-manager and helm
	hack/build-control-plane.sh >/dev/null

.PHONY: e2e
e2e: control-plane ## End-to-end tests against a real local control plane
	$(CARGO) build --workspace --bins --locked
	hack/local-cluster.sh exec -- $(CARGO) test --locked -p byoc-e2e -- --test-threads=$(E2E_THREADS)

.PHONY: e2e-node
e2e-node: control-plane ## The operator as pods on a local node: images, helm install, failover (root)
	hack/node.sh install
	$(CARGO) build --locked -p byoc-e2e --tests
	hack/build-images.sh >/dev/null
	hack/local-cluster.sh --dir $(CARGO_TARGET_DIR)/node-cluster --node exec -- \
	  $(CARGO) test --locked -p byoc-e2e --test node -- --ignored --test-threads=1
	$(CARGO) test --locked -p byoc-e2e --test node_stop -- --ignored --test-threads=1

.PHONY: chart-test
chart-test: control-plane ## Helm chart: lint, render, schema, server-side dry run and install, on a control plane of its own
	$(CARGO) build --workspace --bins --locked
	hack/local-cluster.sh --dir $(CARGO_TARGET_DIR)/chart-test/cluster exec -- \
	  $(CARGO) test --locked -p byoc-e2e --test chart -- --include-ignored --test-threads=$(E2E_THREADS)

.PHONY: images
images: ## Container images without Docker, as OCI archives in $CARGO_TARGET_DIR/images (docs/images.md)
	hack/build-images.sh

.PHONY: bench
bench: ## Criterion benchmarks of the policy core (see docs/benchmarks.md)
	$(CARGO) bench -p byoc-policy
