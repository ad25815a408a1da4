"""Waivers: a waived fail is counted apart from pass until the expiry date, then the fail returns."""

from __future__ import annotations

from datetime import timedelta

import pytest

from compliance.errors import WaiverError
from compliance.history import summarise
from compliance.rules import load_baselines
from compliance.waivers import load_waivers
from tests.fixtures.compliance import NOW, evaluate_fleet, fleet, laptop_facts

WAIVER = """\
waivers:
  - id: W-2026-007
    rule: lx-usb-storage-blocked
    devices: [lap02]
    justification: Scanner in the registry office needs USB mass storage until the new one arrives.
    approved_by: Amtsleitung 10
    expires: 2026-11-30
"""


def _waivers(tmp_path, text=WAIVER):
    p = tmp_path / "waivers.yaml"
    p.write_text(text, encoding="utf-8")
    return load_waivers(p, load_baselines().rule_ids)


def test_waiver_suppresses_fail_until_expiry_then_fail_returns(tmp_path, compliance_config):
    # The clock moves 10 days on; the fixture's security data and its fix (1 and 2 days old at NOW)
    # stay within the limits, so only the waived rule changes.
    compliance_config.compliance.vuln_data_max_age_days = compliance_config.compliance.vuln_fix_max_age_days = 30
    waivers = _waivers(tmp_path)
    devs = fleet(n_ipads=0)
    devs[1].facts = laptop_facts(usb_storage__blocked=False)
    by_id = {d.device: d for d in devs}
    on_expiry_day = NOW.replace(day=30, hour=23)
    for now in (NOW, on_expiry_day):
        res = waivers.apply(evaluate_fleet(compliance_config, devs, now), by_id, now)
        r = next(r for r in res if (r.device, r.rule_id) == ("lap02", "lx-usb-storage-blocked"))
        assert (r.status, r.waiver) == ("waived", "W-2026-007")
        s = summarise(res, by_id)
        assert (s["counts"]["waived"], s["counts"]["fail"]) == (1, 0)
        assert s["counts"]["pass"] == 3 * 24 - 1  # waived is not counted as a pass
        assert s["pass_rate"] < 1.0
    later = on_expiry_day + timedelta(hours=2)
    res = waivers.apply(evaluate_fleet(compliance_config, devs, later), by_id, later)
    r = next(r for r in res if (r.device, r.rule_id) == ("lap02", "lx-usb-storage-blocked"))
    assert (r.status, r.waiver) == ("fail", "W-2026-007")
    assert r.evidence.startswith("waiver W-2026-007 expired on 2026-11-30: usb_storage.blocked=False")


def test_waiver_does_not_touch_other_devices_or_passes(tmp_path, compliance_config):
    waivers = _waivers(tmp_path)
    devs = fleet(n_ipads=0)
    devs[0].facts = laptop_facts(usb_storage__blocked=False)
    res = waivers.apply(evaluate_fleet(compliance_config, devs), {d.device: d for d in devs}, NOW)
    assert {r.status for r in res if r.rule_id == "lx-usb-storage-blocked"} == {"fail", "pass"}


def test_school_selector_waives_ipads(tmp_path, compliance_config):
    text = WAIVER.replace("lx-usb-storage-blocked", "ios-os-version").replace("[lap02]", '["school:gs-demo"]')
    waivers = _waivers(tmp_path, text)
    compliance_config.compliance.min_ipados = "99"
    devs = fleet(n_laptops=0, n_ipads=4)
    res = waivers.apply(evaluate_fleet(compliance_config, devs), {d.device: d for d in devs}, NOW)
    got = {(r.device, r.status) for r in res if r.rule_id == "ios-os-version"}
    assert got == {
        ("ZDTEST00000", "waived"),
        ("ZDTEST00001", "fail"),
        ("ZDTEST00002", "waived"),
        ("ZDTEST00003", "fail"),
    }


@pytest.mark.parametrize(
    "text, message",
    [
        (
            WAIVER.replace(
                "    justification: Scanner in the registry office needs USB mass storage"
                " until the new one arrives.\n",
                "",
            ),
            "waivers.yaml:2: waiver: justification is required",
        ),
        (
            WAIVER.replace("lx-usb-storage-blocked", "lx-no-such-rule"),
            "waivers.yaml:2: waiver W-2026-007: unknown rule 'lx-no-such-rule'",
        ),
        (
            WAIVER.replace("2026-11-30", "next week"),
            "waivers.yaml:2: waiver: expires Input should be a valid date",
        ),
        ("waivers: [", "waivers.yaml:1: broken YAML"),
    ],
)
def test_bad_waiver_file_is_one_line_input_error(tmp_path, text, message):
    with pytest.raises(WaiverError) as e:
        _waivers(tmp_path, text)
    assert str(e.value).split(str(tmp_path) + "/", 1)[1].startswith(message)
    assert e.value.exit_code == 2
