"""The expiry view's numbers for monitoring (`werne mdm check --json` "values", the metrics file):
days left and the limit beside the text, and the identities' counts."""

from __future__ import annotations

import datetime as dt

from enrolment.live_check import CheckResult
from ipad.golive.expiry import ExpiryItem


def test_an_item_gives_days_left_and_its_limit_as_numbers() -> None:
    soon = ExpiryItem("scep-ca", "SCEP CA", 30, expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=12, hours=1))
    assert soon.values() == {"limit_days": 30, "days_left": 12.0}
    assert not soon.ok and "12 days left, limit 30" in soon.summary()
    unread = ExpiryItem("dep-token", "ASM token", 30, error="NanoDEP does not answer")
    assert unread.values() == {"limit_days": 30}  # no number stands in for one that is not known
    # An item whose reader failed (ipad.golive.expiry._read) has no limit either: none is made up.
    assert ExpiryItem("scep-ca", "SCEP CA", 0, error="no depot").values() == {}


def test_the_identities_give_their_counts() -> None:
    ids = ExpiryItem("identities", "device identities", 30, expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=3),
                     by_month={"2026-12": 2, "2027-11": 5}, within_limit=2, expired=1, unknown=4)
    assert ids.values() == {"limit_days": 30, "days_left": 3.0, "known": 7, "within_limit": 2, "expired": 1,
                            "unknown": 4}


def test_a_check_line_carries_its_values_in_json() -> None:
    line = CheckResult("kmfddm", True, "3 werne sets", {"werne_sets": 3})
    assert line.to_dict() == {"name": "kmfddm", "ok": True, "detail": "3 werne sets", "values": {"werne_sets": 3}}
    assert CheckResult("webhook", True, "answers").to_dict()["values"] == {}
