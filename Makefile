# `make demo` and `make test` work from a clean clone: they create .venv if
# missing and install the project (with its test extra) into it first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BENCH_DIR ?= /tmp/tailrace-bench

.PHONY: demo test lint typecheck unit test-all drills fuzz bench clean tools etcd chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tailrace demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy core bench deploy master slave nameserver consumer

# What the tests run besides Python, from Debian when missing (as root, or
# with sudo), with one `apt-get update` for all of them: etcd-server (the
# failover controller's tests; its service is not started), chromium (the
# web console's browser tests) and prometheus for promtool (the alert
# rules' tests). `etcd` and `chromium` install just that one.
tools:
	sh deploy/install_test_tools.sh

etcd:
	sh deploy/install_test_tools.sh etcd

chromium:
	sh deploy/install_test_tools.sh chromium

# The CI set: everything but the tests marked slow or drill.
test: lint typecheck tools
	$(BIN)/pytest

# Everything, slow runs included.
test-all: lint typecheck tools
	$(BIN)/pytest -m ''

# Every failover drill once (fast timings), the controller's drills once
# (local-ha, etcd: its own timings), and the drill-marked tests.
drills: $(STAMP) etcd
	for d in kill-master pause-master partition-master kill-slave restart-all rolling-restart; do \
		$(BIN)/tailrace drill $$d --fast --duration 10 || exit 1; done
	for d in kill-controller pause-controller etcd-member-down etcd-quorum-lost kill-master-and-controller; do \
		$(BIN)/tailrace drill $$d || exit 1; done
	$(BIN)/pytest -m drill

# The fuzz set alone, long: FUZZ_EXAMPLES examples per target (CI runs the
# same tests with the bounded, derandomized fuzz-ci profile).
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	TAILRACE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -m fuzz --hypothesis-profile=fuzz-long \
		--hypothesis-show-statistics --timeout=3600

bench: $(STAMP)
	$(BIN)/tailrace store-bench --dir $(BENCH_DIR) --count 1000000 --size 1024 --batch 256 --warm both --json
	$(BIN)/tailrace bench produce-consume --count 500000 --groups 2 --json
	$(BIN)/tailrace bench replication --count 300000 --json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
