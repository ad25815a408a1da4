"""Longest modules first, so a parallel run does not end on one worker with the longest module.

pytest-xdist's `--dist loadscope` hands each worker whole modules, in the order of the collection
when `--no-loadscope-reorder` is given. With `--longest-first`, the collection is ordered by each
module's measured seconds (tests/durations.json: setup + call + teardown of all its tests, from a
run with `--record-durations`), longest first; the tests inside a module keep their order. A module
not in the file counts as long as the longest one that is: a new module is most likely a long lab
test, and one that turns out short costs a parallel run nothing at the start.

`scripts/test.sh` uses it for both halves of `make test`, and the Makefile for `make check`.
Refresh the file after adding or changing long tests: `make test PYTEST_ARGS=--record-durations`
(each half merges its modules into the file). Registered as a plugin in tests/conftest.py.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")

_seconds: defaultdict[str, float] = defaultdict(float)
_recording = False


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("werne")
    g.addoption("--longest-first", action="store_true",
                help="order modules by tests/durations.json, longest first (with xdist: --no-loadscope-reorder)")
    g.addoption("--record-durations", action="store_true",
                help="merge each module's measured seconds of this run into tests/durations.json")


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def load(path: Path = DURATIONS) -> dict[str, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def longest_first(items: list[pytest.Item], known: dict[str, float]) -> list[pytest.Item]:
    """`items` grouped by module, modules by seconds (unknown ones as the longest), stable inside."""
    unknown = max(known.values(), default=0.0)
    first_seen: dict[str, int] = {}
    for item in items:
        first_seen.setdefault(module_of(item.nodeid), len(first_seen))

    def key(item: pytest.Item) -> tuple[float, int]:
        m = module_of(item.nodeid)
        return -known.get(m, unknown), first_seen[m]

    return sorted(items, key=key)


def pytest_configure(config: pytest.Config) -> None:
    global _recording
    _recording = bool(config.getoption("record_durations")) and not hasattr(config, "workerinput")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("longest_first"):
        items[:] = longest_first(items, load())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Called in the process that reports: the xdist controller gets every worker's reports.
    if _recording:
        _seconds[module_of(report.nodeid)] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _recording:
        return
    merged = {**load(), **{m: round(s, 1) for m, s in _seconds.items()}}
    DURATIONS.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n", encoding="utf-8")
