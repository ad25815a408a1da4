"""The fleet-wide rule ios-apps-token-valid: each Apps and Books location's token must be valid for
apps.token_min_days more days, read from the sToken's own expDate (no call to Apple)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from compliance.collect_fleet import apps_token_facts
from compliance.engine import evaluate
from compliance.facts import DeviceFacts, EvalContext
from compliance.rules import load_baselines
from core.config import load_config
from tests.fakes.fake_appsbooks import make_stoken

NOW = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC)


def results(tmp_path: Path, tokens: dict[str, str | None]) -> dict[str, tuple[str, str]]:
    lines = ["[apps]\n"]
    for name, token in tokens.items():
        path = tmp_path / f"{name}.vpptoken"
        if token is not None:
            path.write_text(token)
        lines.append(f'[apps.locations.{name}]\ntoken_file = "{path}"\n')
    (tmp_path / "werne.toml").write_text("".join(lines))
    config = load_config(tmp_path / "werne.toml")
    rules = load_baselines().for_fleet("ipads")
    ipad = DeviceFacts(device="ZDWK1DEGZD", fleet="ipads", reachable=False, reason="did not answer")
    out = evaluate(rules, [ipad, *apps_token_facts(config)], EvalContext(config=config, now=NOW))
    return {r.device: (r.status, r.evidence) for r in out if r.rule_id == "ios-apps-token-valid"}


def test_each_location_token_is_checked_once_for_the_fleet(tmp_path: Path) -> None:
    r = results(tmp_path, {
        "grundschulen": make_stoken("ORG", NOW + dt.timedelta(days=200)),
        "weiterfuehrende": make_stoken("ORG", NOW + dt.timedelta(days=10)),
        "alt": make_stoken("ORG", NOW - dt.timedelta(days=1)),
        "kaputt": "das ist kein token",
        "fehlt": None,
    })
    assert r["apps-token-grundschulen"] == ("pass", "location grundschulen token expires 2027-09-17, in 200 days")
    assert r["apps-token-weiterfuehrende"] == (
        "fail", "location weiterfuehrende token expires 2027-03-11, in 10 days (limit 30): download a new one in "
                "Apple School Manager")
    assert r["apps-token-alt"][0] == "fail" and "expired" in r["apps-token-alt"][1]
    assert r["apps-token-kaputt"] == ("fail", "location kaputt: not an Apps and Books sToken (not base64 JSON)")
    assert r["apps-token-fehlt"][0] == "fail" and "does not exist" in r["apps-token-fehlt"][1]
    assert "ZDWK1DEGZD" not in r  # a fleet rule, never evaluated per device


def test_no_locations_means_nothing_to_check(tmp_path: Path) -> None:
    assert results(tmp_path, {}) == {}
