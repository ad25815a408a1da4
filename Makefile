# The two commands of the README's quick start are `make demo` and `make test`.
# Each sets up everything it needs first (scripts/setup.sh is idempotent).
SHELL := /bin/bash
VENV := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(CURDIR)/.tools/bin:$(PATH)

.PHONY: setup demo test check lint bench clean-lab

setup:
	@scripts/setup.sh

demo: setup
	$(VENV)/werne demo

test: setup
	$(VENV)/python -m pytest $(PYTEST_ARGS)

# The fast tier for contributors: ruff, then every test that needs no lab (root, nspawn), no
# browser, no PostgreSQL and is not slow. Markers follow the fixtures a test uses (tests/parts.py).
CHECK_MARKERS := not lab and not browser and not postgres and not slow
check: setup
	$(VENV)/ruff check .
	$(VENV)/python -m pytest -q -n 2 -m "$(CHECK_MARKERS)" $(PYTEST_ARGS)

lint: setup
	$(VENV)/ruff check .

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(VENV)/python $$b || exit 1; done

clean-lab:
	-$(VENV)/werne lab down
