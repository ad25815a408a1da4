"""Issue 22: the ADE enrolment endpoint takes requests from anyone on the internet. Garbage posted
as fast as possible used to cost a database row, an openssl run and a log line each; now each client
address gets a burst and a steady rate (core.ratelimit), the rest is a 429 without row or log line,
and the table of clients stays bounded however many addresses there are."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from core.ratelimit import RateLimiter
from enrolment import ade
from enrolment.models import ADEEnrolmentAttempt
from enrolment.web.app import create_app
from tests.fixtures.enrolment import InThreadServer, make_site


def test_garbage_posted_in_a_flood_costs_at_most_the_burst(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="werne.enrolment.web")
    # A refill too slow to matter during the flood, however long a loaded machine takes for it: the
    # count below is then exact and depends on no clock.
    monkeypatch.setattr(ade, "RATE_PER_SECOND", 1e-9)
    site = make_site(tmp_path / "site")
    codes = []
    with InThreadServer(create_app(site.config())) as srv, requests.Session() as s:
        for _ in range(ade.RATE_BURST + 140):
            codes.append(s.post(srv.url + ade.DEFAULT_ENROL_PATH, data=b"garbage", timeout=10).status_code)
    served = codes.count(400)
    assert served == ade.RATE_BURST, codes
    assert codes[: ade.RATE_BURST] == [400] * ade.RATE_BURST and codes.count(429) == len(codes) - served
    with site.db().session() as db:
        assert db.scalar(select(func.count()).select_from(ADEEnrolmentAttempt)) == served
    lines = [r.getMessage() for r in caplog.records]
    assert sum("ADE enrolment refused (400)" in m for m in lines) == served
    # One "limited" line a minute per client, not one per refused post.
    assert 1 <= sum("over the rate limit" in m for m in lines) < 10


def test_the_limiter_refills_per_key_and_stays_bounded() -> None:
    now = [0.0]
    limit = RateLimiter(burst=3, per_second=0.5, max_keys=100, clock=lambda: now[0])
    assert [limit.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("b")  # another client has its own bucket
    now[0] += 2.0  # one token back
    assert [limit.allow("a") for _ in range(2)] == [True, False]
    for n in range(10_000):
        limit.allow(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(limit) == 100
