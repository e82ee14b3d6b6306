# lumberd: `make run` serves Filebeat on :5044 with the file output; `make test` installs
# what the tests need (Rust crates, Go modules, pip and npm packages) and runs them all.

CARGO ?= cargo
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -1)
FUZZ_SECONDS ?= 300
BENCH_EVENTS ?= 2000000
BENCH_ES_EVENTS ?= 400000
# The 3-node run indexes every event twice (1 replica) on the same 2 cores: fewer events,
# so that it stays within a few minutes (benches/e2e_es.py rounds up to whole windows).
BENCH_ES_CLUSTER_EVENTS ?= 49152

.PHONY: all build release run test test-deps helm-test compose-check kibana-import image check fmt lint bench fuzz fixtures clean

all: build

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release

## Start lumberd, ready for Filebeat on 5044: the embedded file output (./data), or
## Elasticsearch with ES=http://127.0.0.1:9200 (comma-separated hosts).
ES ?=
run: release
	LUMBERD_OUTPUT_ELASTICSEARCH="$(ES)" ./target/release/lumberd serve --config config/lumberd.toml

## Install the real Beats clients the tests drive (go-lumber, pylogbeat, lumberjack-client,
## and Elastic's Filebeat, built once into ~/.cache/lumberd/filebeat), promtool (Debian's
## prometheus package, unpacked into target/tools), Debian's docker-compose (for
## compose-check), and fetch the Elasticsearch and the OpenSearch the output tests run
## (with mvn, cached in ~/.cache/lumberd/es).
test-deps:
	bash tests/clients/setup.sh
	bash tests/tools/setup.sh
	bash tests/tools/docker-compose.sh
	bash tests/es/es.sh fetch
	LUMBERD_ES_ENGINE=opensearch bash tests/es/es.sh fetch

## Every test: unit, fixture replay, properties, real clients against a live lumberd, and
## the Helm chart (checked with the lumberd just built).
test: test-deps
	$(CARGO) build --locked --bins
	LUMBERD_REQUIRE_CHECK_CONFIG=1 LUMBERD_BIN=target/debug/lumberd bash helm/test.sh
	bash deploy/compose/check.sh target/debug/lumberd target/clients/filebeat
	LUMBERD_REQUIRE_FIXTURES=1 LUMBERD_REQUIRE_ES=1 $(CARGO) test --locked

## The Helm chart: lint, render every helm/lumberd/ci/*-values.yaml, validate offline
## (Kubernetes schemas, prometheus-operator types, PromQL, metric list), unit tests.
## Installs its pinned tools on first use into ~/.cache/lumberd/helm.
helm-test:
	bash helm/test.sh

## deploy/compose offline: `docker-compose config` on every compose file, `lumberd
## check-config` and `filebeat test config` on the configurations they mount (Filebeat's
## part when target/clients/filebeat exists). Needs docker-compose (make test-deps).
compose-check: build
	bash deploy/compose/check.sh target/debug/lumberd $(wildcard target/clients/filebeat)

## Import kibana/qwen-logs.ndjson (data views, saved search, dashboard) into a Kibana 8.11:
## make kibana-import KIBANA=http://localhost:5601 [KIBANA_AUTH=elastic:password]
KIBANA ?=
KIBANA_AUTH ?=
kibana-import:
	@test -n "$(KIBANA)" || { echo "usage: make kibana-import KIBANA=http://host:5601 [KIBANA_AUTH=user:password]" >&2; exit 2; }
	KIBANA_AUTH="$(KIBANA_AUTH)" bash kibana/import.sh "$(KIBANA)"

## The container image lumberd:$(VERSION) (Dockerfile); needs a Docker daemon.
image:
	@docker info >/dev/null 2>&1 || { echo "make image: no Docker daemon reachable (docker info failed): start one or point DOCKER_HOST at one" >&2; exit 1; }
	docker build -t lumberd:$(VERSION) .

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Decoder and spool throughput (criterion), lumberd's RSS against the README's memory
## bound (tests/memory.rs on the release build), the end-to-end load runs (files, then a
## real Elasticsearch node without and with the spool, then a 3-node cluster); figures
## in target/bench/.
bench: release
	mkdir -p target/bench
	$(CARGO) bench --locked --bench decode
	$(CARGO) bench --locked --bench spool
	rm -f target/bench/memory.jsonl
	LUMBERD_MEMORY_FIGURES=$(CURDIR)/target/bench/memory.jsonl $(CARGO) test --locked --release --test memory -- --test-threads=1
	$(CARGO) build --locked --release --example floor
	python3 benches/e2e.py --lumberd target/release/lumberd --events $(BENCH_EVENTS)
	bash tests/es/es.sh fetch
	python3 benches/e2e_es.py --lumberd target/release/lumberd --lumberload target/bench/lumberload --events $(BENCH_ES_EVENTS) --spool
	python3 benches/e2e_es.py --lumberd target/release/lumberd --lumberload target/bench/lumberload --events $(BENCH_ES_CLUSTER_EVENTS) --cluster 3

## Fuzz the decoder, then the spool's segment scanner, FUZZ_SECONDS each (not part of CI).
fuzz:
	bash fuzz/run.sh $(FUZZ_SECONDS)

## Re-record proto-fixtures/valid from the real clients.
fixtures: test-deps
	bash tests/clients/record-fixtures.sh

clean:
	$(CARGO) clean
	rm -rf data
