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

# The whole suite; it ends with its 40 slowest tests (where the time goes, for whoever speeds it up).
test: setup
	$(VENV)/python -m pytest --durations=40 $(PYTEST_ARGS)

# The fast tier for contributors: ruff, mypy (strict, on the packages listed in pyproject.toml's
# [tool.mypy] files), then every test that needs no lab (root, nspawn), no browser, no PostgreSQL
# and is not slow. Markers follow the fixtures a test uses (tests/parts.py). The tests marked lint
# run ruff and mypy again for `make test`: here the two steps before pytest have done that.
CHECK_MARKERS := not lab and not browser and not postgres and not slow and not lint
check: setup
	$(VENV)/ruff check .
	$(VENV)/mypy
	$(VENV)/python -m pytest -q -n 2 --dist loadscope -m "$(CHECK_MARKERS)" $(PYTEST_ARGS)

lint: setup
	$(VENV)/ruff check .
	$(VENV)/mypy

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(VENV)/python $$b || exit 1; done

clean-lab:
	-$(VENV)/werne lab down
