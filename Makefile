# The two commands a fresh machine needs: `make demo` (main job) and `make test` (tests).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench setup setup-test parity-venv

setup:
	bash scripts/setup.sh main

setup-test:
	bash scripts/setup.sh test

demo: setup
	$(PY) -m cp2_engine.cli demo --out demo_output

test: setup-test
	bash scripts/run_tests.sh

lint: setup-test
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup-test
	$(PY) benchmarks/run_all.py
