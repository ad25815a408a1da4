"""core.timing: steps recorded from several threads, added up, with their spans and whose CPU it is."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from core.timing import StepTimes, timed


def test_add_sums_a_step_and_widens_its_span() -> None:
    t = StepTimes()
    t.add("mdm.enqueue", 0.5, 0.1, start=1.0, end=1.5, commands=100)
    t.add("mdm.enqueue", 0.25, 0.05, start=2.0, end=2.25, commands=23)
    st = t.get("mdm.enqueue")
    assert st is not None
    assert (st.wall_s, st.count, st.start_s, st.end_s) == (0.75, 2, 1.0, 2.25)
    assert st.cpu_s == pytest.approx(0.15)
    assert st.detail == {"commands": 123}
    assert st.cpu_of == "thread"


def test_cpu_measured_elsewhere_says_whose_or_none() -> None:
    t = StepTimes()
    t.add("laptops.on_hosts", 0.8, 4.5, "hosts", count=70)
    t.add("mdm.ingest", 3.0, None, "")
    hosts, ingest = t.get("laptops.on_hosts"), t.get("mdm.ingest")
    assert hosts is not None and ingest is not None
    assert (hosts.cpu_of, hosts.count, hosts.cpu_s) == ("hosts", 70, 4.5)
    assert ingest.cpu_s is None and ingest.to_dict()["cpu_s"] is None


def test_step_records_each_thread_once_with_its_detail() -> None:
    t = StepTimes()

    def work(name: str) -> None:
        with t.step(name) as detail:
            detail["items"] = 3

    threads = [threading.Thread(target=work, args=(f"s{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    with t.step("s0"):
        pass
    names = sorted(s.name for s in t.steps())
    assert names == ["s0", "s1", "s2", "s3"]
    s0 = t.get("s0")
    assert s0 is not None and s0.count == 2 and s0.detail == {"items": 3}
    assert s0.start_s is not None and s0.end_s is not None and s0.start_s <= s0.end_s
    with t.step("kids", children=True):
        pass
    kids = t.get("kids")
    assert kids is not None and kids.cpu_of == "thread+children"


def test_timed_without_a_recorder_is_a_no_op() -> None:
    with timed(None, "anything") as detail:
        detail["x"] = 1  # a throwaway dict: callers need not check for a recorder


def test_offset_places_a_wall_clock_time_on_the_recorder_s_axis() -> None:
    from datetime import UTC, datetime

    t = StepTimes()
    at = datetime.fromtimestamp(t.wall0, UTC) + timedelta(seconds=2.5)
    assert abs(t.offset(at) - 2.5) < 1e-6
