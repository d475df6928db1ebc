# The README's Quickstart: `make run` and `make test` do all set-up on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
CONFIG ?= conf/application.conf

.PHONY: install run check-config test lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

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
	$(VENV)/bin/pytest
