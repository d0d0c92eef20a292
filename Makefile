# omnibus developer entry points. Every target that needs tools runs `deps`
# first, so a fresh Debian 12 machine needs nothing installed by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Build tools, native libraries of the drivers, test tools, and the brokers
# the tests start on loopback (Kafka runs from Maven jars on Java 17), from Debian.
APT_PACKAGES := build-essential cmake ninja-build pkg-config git \
	python3 python3-dev python3-venv python3-pip \
	nlohmann-json3-dev libgtest-dev libboost-dev \
	librdkafka-dev libpaho-mqttpp-dev libpaho-mqtt-dev libssl-dev libnats-dev librabbitmq-dev libcurl4-openssl-dev \
	libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc \
	mosquitto mosquitto-clients nats-server rabbitmq-server amqp-tools kcat redis-server \
	openjdk-17-jre-headless maven \
	clang libclang-rt-14-dev chromium golang-1.19-go
# clang and libclang-rt-14-dev (libFuzzer, ASan, UBSan runtimes): make fuzz.
# chromium: the test that opens the comparison's report.html in a headless browser.
# golang-1.19-go: fetches the Go release that builds Google's Pub/Sub fake (gcp-deps).
# Build tools of the package, needed in the venv because it is built with
# --no-build-isolation (incremental builds in build/).
PIP_PACKAGES := "pybind11>=2.12" "scikit-build-core>=0.9"
# Everything else comes from pyproject.toml's extras, so the Makefile and
# `pip install "omnibus[compare]"` never disagree: compare (pandas, matplotlib,
# tqdm), notebook, test, and peers (the peer clients that the benchmarks run
# beside omnibus in the same run, and Kafka's end offsets).
PIP_EXTRAS := compare notebook test peers redis pulsar gcp

.PHONY: deps apt-deps pip-deps kafka-deps pulsar-deps gcp-deps build cpp-test py-install test demo bench fuzz clean sanitize sanitize-cpp sanitize-py tsan soak

deps: apt-deps pip-deps kafka-deps pulsar-deps gcp-deps

# Idempotent: installs only the packages that are missing.
apt-deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing $$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

pip-deps:
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys, tomllib; x = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]; \
		print("\n".join(sorted({r for e in sys.argv[1:] for r in x[e]})))' $(PIP_EXTRAS) > $(VENV)/extras.txt
	@$(PY) -m pip install -q --disable-pip-version-check $(PIP_PACKAGES) -r $(VENV)/extras.txt

# Apache Kafka's jars from Maven, once, into the cache the harness reads
# (omnibus.testing.brokers.kafka.kafka_home). Plain shell: the package cannot
# be imported before it is built. Downloads into a temporary directory and
# renames it, so an existing libs/ is always complete.
KAFKA_POM := python/omnibus/testing/kafka/pom.xml
KAFKA_VERSION := $(shell sed -n 's|.*<kafka.version>\(.*\)</kafka.version>.*|\1|p' $(KAFKA_POM))
KAFKA_HOME := $(or $(OMNIBUS_KAFKA_HOME),$(HOME)/.cache/omnibus/kafka-$(KAFKA_VERSION))

kafka-deps: apt-deps
	@[ -d "$(KAFKA_HOME)/libs" ] || { \
		work=$$(mkdir -p "$(KAFKA_HOME)" && mktemp -d "$(KAFKA_HOME)/libs.tmp-XXXXXX") && \
		cp $(KAFKA_POM) "$$work/pom.xml" && \
		mvn -q -B -f "$$work/pom.xml" dependency:copy-dependencies -DoutputDirectory="$$work/libs" && \
		mv -T "$$work/libs" "$(KAFKA_HOME)/libs"; \
		rc=$$?; rm -rf "$$work"; exit $$rc; }

# Apache Pulsar's jars the same way (omnibus.testing.brokers.pulsar.pulsar_home):
# the standalone broker, about 240 MB of jars.
PULSAR_POM := python/omnibus/testing/pulsar/pom.xml
PULSAR_VERSION := $(shell sed -n 's|.*<pulsar.version>\(.*\)</pulsar.version>.*|\1|p' $(PULSAR_POM))
PULSAR_HOME := $(or $(OMNIBUS_PULSAR_HOME),$(HOME)/.cache/omnibus/pulsar-$(PULSAR_VERSION))

pulsar-deps: apt-deps
	@[ -d "$(PULSAR_HOME)/libs" ] || { \
		work=$$(mkdir -p "$(PULSAR_HOME)" && mktemp -d "$(PULSAR_HOME)/libs.tmp-XXXXXX") && \
		cp $(PULSAR_POM) "$$work/pom.xml" && \
		mvn -q -B -f "$$work/pom.xml" dependency:copy-dependencies -DoutputDirectory="$$work/libs" && \
		mv -T "$$work/libs" "$(PULSAR_HOME)/libs"; \
		rc=$$?; rm -rf "$$work"; exit $$rc; }

# Google's Pub/Sub fake (pstest, Go module cloud.google.com/go/pubsub/v2) for
# the gcppubsub:// tests, built once into the cache the harness reads
# (omnibus.testing.brokers.pubsub.fake_home). Its go.mod asks for a newer Go
# than Debian 12's 1.19, so Debian's Go fetches the Go release that go.mod
# names as a module (golang.org/toolchain, through Go's default module proxy,
# as Go >= 1.21 does by itself) into ~/.cache/omnibus/go, and that builds it.
# The Go on PATH, if any, is not used: the same toolchain everywhere.
PUBSUB_FAKE_SRC := python/omnibus/testing/pubsub_fake
PUBSUB_FAKE_VERSION := $(shell sed -n 's|.*cloud.google.com/go/pubsub/v2 \(v[^ ]*\).*|\1|p' $(PUBSUB_FAKE_SRC)/go.mod)
PUBSUB_FAKE_HOME := $(or $(OMNIBUS_PUBSUB_FAKE_HOME),$(HOME)/.cache/omnibus/pubsub-fake-$(PUBSUB_FAKE_VERSION))
GO_RELEASE := go$(shell sed -n 's/^go \([0-9.]*\)$$/\1/p' $(PUBSUB_FAKE_SRC)/go.mod)
GO_HOME := $(HOME)/.cache/omnibus/go
GO_BOOTSTRAP := /usr/lib/go-1.19/bin/go

gcp-deps: apt-deps
	@[ -x "$(PUBSUB_FAKE_HOME)/pubsub-fake" ] || { \
		set -e; mkdir -p "$(GO_HOME)" "$(PUBSUB_FAKE_HOME)"; \
		export GOMODCACHE="$(GO_HOME)/mod" GOPATH="$(GO_HOME)/path" GOFLAGS=-modcacherw GOTOOLCHAIN=local CGO_ENABLED=0; \
		echo "make deps: fetching $(GO_RELEASE) and building the Pub/Sub fake $(PUBSUB_FAKE_VERSION)"; \
		dir=$$(cd "$(GO_HOME)" && $(GO_BOOTSTRAP) mod download -json \
			golang.org/toolchain@v0.0.1-$(GO_RELEASE).linux-$$(dpkg --print-architecture) | sed -n 's/.*"Dir": "\(.*\)",/\1/p'); \
		[ -n "$$dir" ] || { echo "make deps: could not fetch $(GO_RELEASE)"; exit 1; }; \
		chmod -R u+x "$$dir/bin" "$$dir/pkg/tool"; \
		(cd $(PUBSUB_FAKE_SRC) && "$$dir/bin/go" build -mod=readonly -o "$(PUBSUB_FAKE_HOME)/pubsub-fake.tmp" .); \
		mv "$(PUBSUB_FAKE_HOME)/pubsub-fake.tmp" "$(PUBSUB_FAKE_HOME)/pubsub-fake"; }

# The C++ engine and its GoogleTest units (CTest label "unit").
cpp-test: deps
	cmake -S . -B build/cpp -G Ninja -DOMNIBUS_BUILD_TESTS=ON -DOMNIBUS_BUILD_PYTHON=OFF
	cmake --build build/cpp
	cd build/cpp && ctest --output-on-failure -L unit

# The Python package, built by scikit-build-core (incremental in build/).
py-install: deps
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation .

test: cpp-test py-install
	$(PY) -m pytest

# The main job: the protocol comparison on brokers omnibus starts itself.
demo: py-install
	$(PY) -m omnibus compare --quick --out omnibus-compare

# ASan + UBSan: the engine, its units and the Python extension built with
# -fsanitize=address,undefined in build/asan; the units run, then the pytest
# suite (PYTEST_ARGS, default the whole suite) with the ASan runtime preloaded
# into Python and the sanitized extension first on sys.path. ASan recovers and
# logs every report to build/asan/logs (the run then fails and prints them);
# UBSan aborts at its first report (GCC writes those to stderr only). Broker
# processes get no LD_PRELOAD (omnibus.testing strips it).
ASAN_DIR := build/asan
SAN_FLAGS := -fsanitize=address,undefined -fsanitize-recover=address -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer -g -O1
PYTEST_ARGS ?=
sanitize: sanitize-cpp sanitize-py

sanitize-cpp: deps
	cmake -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$(SAN_FLAGS)" \
		-DOMNIBUS_BUILD_TESTS=ON -DOMNIBUS_BUILD_PYTHON=ON -DPython_EXECUTABLE=$(CURDIR)/$(PY) \
		-Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir)
	cmake --build $(ASAN_DIR)
	cd $(ASAN_DIR) && ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -L unit

sanitize-py: sanitize-cpp py-install
	rm -rf $(ASAN_DIR)/py $(ASAN_DIR)/logs && mkdir -p $(ASAN_DIR)/py $(ASAN_DIR)/logs
	cp -r python/omnibus $(ASAN_DIR)/py/omnibus && cp $(ASAN_DIR)/_core*.so $(ASAN_DIR)/py/omnibus/
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
	ASAN_OPTIONS=detect_leaks=0:halt_on_error=0:log_path=$(CURDIR)/$(ASAN_DIR)/logs/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	PYTHONPATH=$(CURDIR)/$(ASAN_DIR)/py $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if ls $(ASAN_DIR)/logs/asan.* >/dev/null 2>&1; then \
		echo "make sanitize: AddressSanitizer reports:"; cat $(ASAN_DIR)/logs/asan.*; exit 1; fi; \
	exit $$rc

# ThreadSanitizer build of the C++ units (build/tsan); suppressions for races
# inside libraries we cannot instrument are in cpp/tsan.supp, each with why.
tsan: deps
	cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer -g -O1" \
		-DOMNIBUS_BUILD_TESTS=ON -DOMNIBUS_BUILD_PYTHON=OFF
	cmake --build build/tsan
	cd build/tsan && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/cpp/tsan.supp" \
		ctest --output-on-failure -L unit

# Every driver for SOAK_MINUTES (default 10) with a broker restarted every
# minute; prints RSS, fds and threads per minute and fails when they grow.
SOAK_MINUTES ?= 10
soak: py-install
	$(PY) tests/soak.py --minutes $(SOAK_MINUTES)

bench: py-install
	$(PY) benchmarks/bench_mem.py

# libFuzzer targets (cpp/fuzz/*_fuzz.cpp) with ASan and UBSan, each run for
# FUZZ_SECONDS on a scratch corpus in build/fuzz/corpus/ seeded from
# cpp/fuzz/corpus/<target>/, so a run never grows the committed seeds. A crash
# or property violation fails the run; its input is kept in build/fuzz/artifacts/
# and the fuzzer's log in build/fuzz/<target>.log. Replay one with
# build/fuzz/<target>_fuzz <file>.
FUZZ_SECONDS ?= 60
FUZZ_MAX_LEN ?= 4096
FUZZ_TARGETS := url json msgpack base64 text nats_envelope mqtt_envelope mqtt_packets amqp_envelope awssqs_envelope pulsar_envelope \
	gcp_envelope

fuzz: apt-deps
	CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DOMNIBUS_BUILD_FUZZ=ON \
		-DOMNIBUS_BUILD_PYTHON=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build/fuzz
	@failed=""; summary=""; \
	for t in $(FUZZ_TARGETS); do \
		corpus=build/fuzz/corpus/$$t; artifacts=build/fuzz/artifacts/$$t/; log=build/fuzz/$$t.log; \
		mkdir -p $$corpus $$artifacts && cp cpp/fuzz/corpus/$$t/* $$corpus/; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s (log: $$log)"; \
		if build/fuzz/$${t}_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAX_LEN) -timeout=10 \
				-print_final_stats=1 -artifact_prefix=$$artifacts $$corpus >$$log 2>&1; then \
			result=ok; \
		else \
			result=FAILED; failed="$$failed $$t"; tail -n 60 $$log; \
		fi; \
		runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $$log); \
		summary="$$summary$$(printf '%-14s %12s executions  %s' $$t "$${runs:-?}" $$result)\n"; \
	done; \
	printf "fuzz summary:\n$$summary"; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed (inputs in build/fuzz/artifacts/)"; exit 1; fi

clean:
	rm -rf build $(VENV)
