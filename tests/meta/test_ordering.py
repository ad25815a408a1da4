"""tests/ordering.py: `make test` hands workers the longest modules first."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.ordering import DURATIONS, load, longest_first


def items(*nodeids: str) -> list[Any]:
    return [SimpleNamespace(nodeid=n) for n in nodeids]


def test_modules_longest_first_unknown_as_longest_tests_kept_in_order() -> None:
    got = longest_first(items("a.py::t1", "b.py::t1", "a.py::t2", "c.py::t1", "new.py::t1", "b.py::t2"),
                        {"a.py": 10.0, "b.py": 300.0, "c.py": 50.0})
    assert [i.nodeid for i in got] == ["b.py::t1", "b.py::t2", "new.py::t1", "c.py::t1", "a.py::t1", "a.py::t2"]


def test_the_committed_durations_name_existing_modules(tmp_path: Path) -> None:
    """A module renamed or deleted leaves a stale line; a broken file orders nothing (load -> {})."""
    known = load()
    assert known, DURATIONS
    root = DURATIONS.parent.parent
    assert [m for m in known if not (root / m).is_file()] == []
    broken = tmp_path / "d.json"
    broken.write_text("[1, 2", encoding="utf-8")
    assert load(broken) == {}
    broken.write_text(json.dumps({"x.py": "slow", "y.py": 3}), encoding="utf-8")
    assert load(broken) == {"y.py": 3.0}
