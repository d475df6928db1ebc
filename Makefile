# The README's Quickstart: `make sandbox`, `make run` and `make test` do all set-up on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
CONFIG ?= conf/application.conf

.PHONY: install sandbox run check-config test lint bench bench-quick chaos fuzz

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The real daemon with X stood in locally and an echo bot: open http://127.0.0.1:5757/
sandbox: install
	$(VENV)/bin/twitter-bot sandbox

run: install
	bash .ci/ensure-rabbitmq
	$(VENV)/bin/twitter-bot run --config $(CONFIG)

check-config: install
	$(VENV)/bin/twitter-bot check-config --config $(CONFIG)

lint: install
	$(VENV)/bin/ruff check twitter_bot tests
	$(VENV)/bin/ruff format --check twitter_bot tests
	$(VENV)/bin/mypy

test: install lint
	bash .ci/ensure-rabbitmq
	bash .ci/ensure-chromium
	$(VENV)/bin/pytest

# Benchmarks and chaos runs (bench/README.md); each writes its section of docs/performance.md.
# They need `wrk` (Debian package) for the ingest benchmark. About 45 minutes in all.
BENCH_PY = $(VENV)/bin/python

bench: install
	bash .ci/ensure-rabbitmq
	$(BENCH_PY) bench/ingest.py
	$(BENCH_PY) bench/ack_latency.py
	$(BENCH_PY) bench/pipeline.py
	$(BENCH_PY) bench/slow_bot.py
	$(BENCH_PY) bench/memory.py
	$(BENCH_PY) bench/fuzz.py
	$(BENCH_PY) bench/chaos.py

bench-quick: install
	bash .ci/ensure-rabbitmq
	for b in ingest ack_latency pipeline slow_bot memory fuzz chaos; do \
	  $(BENCH_PY) bench/$$b.py --quick || exit 1; done

chaos: install
	bash .ci/ensure-rabbitmq
	$(BENCH_PY) bench/chaos.py

fuzz: install
	bash .ci/ensure-rabbitmq
	$(BENCH_PY) bench/fuzz.py
