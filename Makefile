# The two commands of the README's quick start are `make demo` and `make test`.
# Each sets up everything it needs first (scripts/setup.sh is idempotent).
SHELL := /bin/bash
VENV := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(CURDIR)/.tools/bin:$(PATH)
# Python keeps the modules it compiles (__pycache__/, ignored by git), even where the shell sets
# PYTHONDONTWRITEBYTECODE: with it, each test worker and each werne process a test starts compiled
# werne's modules from source again, and pytest rewrote every test module again (bench/RESULTS.md).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test check lint bench clean-lab

setup:
	@scripts/setup.sh

demo: setup
	$(VENV)/werne demo

# `make check`'s workers: one more than the cores, so that tests waiting on servers and
# sub-processes overlap (measured on 2 cores: 2 workers 110 s, 3 workers 100 s, 4 workers 107 s).
WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))

# The whole suite: the lab's tests on two workers, and every other test beside them on the cores,
# longest modules first (scripts/test.sh); each half ends with its 25 slowest tests.
test: setup
	@scripts/test.sh $(PYTEST_ARGS)

# The fast tier for contributors: ruff, mypy (strict, on the packages listed in pyproject.toml's
# [tool.mypy] files), then every test that needs no lab (root, nspawn), no browser, no PostgreSQL
# and is not slow. Markers follow the fixtures a test uses (tests/parts.py). The tests marked lint
# run ruff and mypy again for `make test`: here the two steps before pytest have done that.
# Longest modules first (tests/ordering.py), as in `make test`: 70 s instead of 75 s on 2 cores.
CHECK_MARKERS := not lab and not browser and not postgres and not slow and not lint
check: setup
	$(VENV)/ruff check .
	$(VENV)/mypy
	$(VENV)/python -m pytest -q -n $(WORKERS) --dist loadscope --longest-first --no-loadscope-reorder \
		-m "$(CHECK_MARKERS)" $(PYTEST_ARGS)

lint: setup
	$(VENV)/ruff check .
	$(VENV)/mypy

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(VENV)/python $$b || exit 1; done

clean-lab:
	-$(VENV)/werne lab down
