# The two commands of the README: `make run` (the main job) and `make test` (the whole test suite).
# Both install what the machine is missing first. Everything else here is what CI runs besides.
SWIFT ?= swift
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(notdir $(wildcard Fuzz/Fuzz*))

.PHONY: setup run test lint format example fuzz fuzz-build bench bench-ci bench-daemon docs interop

setup:
	@scripts/setup.sh build

# The main job: virtrngd serving getrandom on its default socket, /run/virtrngd/egd-pool, until SIGTERM
# or Ctrl-C. Extra flags: make run ARGS="--socket /tmp/egd,rate=20k".
run: setup
	$(SWIFT) run -c release virtrngd $(ARGS)

test: setup
	$(SWIFT) test --disable-xctest

lint:
	$(SWIFT) format lint --strict --recursive --parallel Package.swift Sources Tests Fuzz Benchmarks Examples

format:
	$(SWIFT) format format --in-place --recursive --parallel Package.swift Sources Tests Fuzz Benchmarks Examples

# Builds and runs the consumer package that depends on VirtQueue alone, then proves its build holds no
# module of the daemons' dependencies.
example: setup
	scripts/check-example.sh

fuzz-build:
	@for t in $(FUZZ_TARGETS); do \
	  $(SWIFT) build -c release --product $$t --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address \
	    --scratch-path .build-fuzz || exit 1; \
	done

# Runs every libFuzzer target for FUZZ_SECONDS from its checked-in seeds (copied, never grown in place).
fuzz: setup fuzz-build
	@for t in $(FUZZ_TARGETS); do scripts/run-fuzzer.sh $$t $(FUZZ_SECONDS) || exit 1; done

bench: setup
	$(SWIFT) package --package-path Benchmarks benchmark --format markdown

# Short mode for CI: every benchmark runs briefly, prints its table, and allocation counts are gated.
bench-ci: setup
	scripts/bench-ci.sh

# virtrngd (release) in its own process under 64 pipelining unix-socket clients and 1,000 idle ones, with
# getrandom measured in the same run (scripts/bench-daemon.py); fails when a target is missed widely.
# Short by default, for CI (about 10 s after the release build); BENCH_SHORT=0 loads for 10 s.
BENCH_SHORT ?= 1
bench-daemon: setup
	VIRTRNG_BENCH_SHORT=$(BENCH_SHORT) scripts/bench-daemon.py

docs:
	@for t in VirtQueue EGDCodec RateLimit EntropySources VirtRNGCore EGDServer; do echo "docs: $$t";  \
	  $(SWIFT) package generate-documentation --target $$t --warnings-as-errors >/dev/null || exit 1; \
	done

# Interop tests against the real peers: a TCG guest's virtio-rng through QEMU's rng-egd, and
# ekeyd-egd-linux (scripts/interop/run.py; needs root). The server under test is $(VIRTRNGD), by default
# the release build of virtrngd (built here); EGD_SERVER=stub runs the Python stand-in instead.
# INTEROP_ARGS passes options to run.py, e.g. INTEROP_ARGS='guest --runs 5'.
EGD_SERVER ?= virtrngd
INTEROP_ARGS ?= all
interop:
	@scripts/setup.sh interop
	@scripts/interop/build-guest.sh
ifeq ($(EGD_SERVER),stub)
	scripts/interop/run.py --egd-server-cmd stub $(INTEROP_ARGS)
else ifdef VIRTRNGD
	scripts/interop/run.py --egd-server-cmd "$(VIRTRNGD)" $(INTEROP_ARGS)
else
	$(SWIFT) build -c release --product virtrngd
	scripts/interop/run.py --egd-server-cmd "$$($(SWIFT) build -c release --show-bin-path)/virtrngd" $(INTEROP_ARGS)
endif
