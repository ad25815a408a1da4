"""The patch level rules in the engine, on hand-written facts: each one passes, fails and is not
applicable exactly where it should, with evidence that says why; thresholds come from the config."""

from __future__ import annotations

import pytest

from compliance.engine import evaluate_rule
from compliance.facts import DeviceFacts
from compliance.rules import load_baselines
from tests.fixtures.compliance import laptop_facts, make_ctx

DAY = 86400
PATCH_RULES = ("lx-security-updates", "lx-unattended-upgrade-recent", "lx-reboot-pending", "lx-kernel-current")


def outcome(config, rule_id: str, **overrides):
    rule = load_baselines().rule(rule_id)
    r = evaluate_rule(rule, DeviceFacts("lap01", "laptops", laptop_facts(**overrides)), make_ctx(config))
    return r.status, r.evidence


def test_patch_rules_reference_bsi_and_name_a_werne_command_or_a_user_step():
    b = load_baselines()
    for rid in PATCH_RULES:
        rule = b.rule(rid)
        assert "OPS.1.1.3.A15" in rule.references.grundschutz
        assert "werne " in (rule.remediation.action or ""), rid


def test_a_patched_laptop_passes_all_four(compliance_config):
    got = {rid: outcome(compliance_config, rid) for rid in PATCH_RULES}
    assert {rid: s for rid, (s, _) in got.items()} == dict.fromkeys(PATCH_RULES, "pass")
    assert got["lx-security-updates"][1] == (
        "no security update pending in Debian-Security/bookworm-security; lists 0.8 days old")
    assert got["lx-kernel-current"][1] == "running the newest installed kernel 6.1.0-28-amd64"


@pytest.mark.parametrize(
    ("overrides", "status", "evidence"),
    [
        ({"patch__pending__security_count": 1, "patch__pending__security": ["openssl 3.0.14-1 -> 3.0.15-1"]},
         "fail", "1 security update(s) pending: openssl 3.0.14-1 -> 3.0.15-1"),
        ({"patch__lists__age_s": 8 * DAY}, "fail",
         "package lists last refreshed 8 days ago (limit 7 days): newer updates are unknown"),
        ({"patch__lists__age_s": None}, "fail",
         "package lists last refreshed never (limit 7 days): newer updates are unknown"),
        ({"patch__lists__security_releases": [], "patch__lists__releases": ["Debian/bookworm"]}, "fail",
         "no security release among the APT sources (Debian/bookworm)"),
        ({"patch__lists__release_files": 0}, "fail",
         "no APT package lists on the laptop: pending updates cannot be judged"),
        ({"patch__pending": {"error": "E: dpkg was interrupted"}}, "error",
         "apt-get -s dist-upgrade failed: E: dpkg was interrupted"),
    ],
)
def test_security_updates(compliance_config, overrides, status, evidence):
    assert outcome(compliance_config, "lx-security-updates", **overrides) == (status, evidence)


def test_missing_lists_can_be_not_applicable_by_config(compliance_config):
    compliance_config.compliance.apt_lists_missing = "not_applicable"
    assert outcome(compliance_config, "lx-security-updates", patch__lists__release_files=0) == (
        "not_applicable",
        "no APT package lists on the laptop: pending updates cannot be judged; "
        "compliance.apt_lists_missing = not_applicable",
    )
    # Only missing lists: a pending update still fails.
    assert outcome(compliance_config, "lx-security-updates", patch__pending__security_count=3)[0] == "fail"


def test_lists_age_limit_is_a_setting(compliance_config):
    compliance_config.compliance.apt_lists_max_age_days = 10
    assert outcome(compliance_config, "lx-security-updates", patch__lists__age_s=8 * DAY)[0] == "pass"


def test_unattended_upgrade_recent(compliance_config):
    assert outcome(compliance_config, "lx-unattended-upgrade-recent", patch__unattended_upgrade__age_s=None) == (
        "fail", "unattended-upgrade has never completed a run")
    assert outcome(compliance_config, "lx-unattended-upgrade-recent",
                   patch__unattended_upgrade__age_s=8 * DAY) == (
        "fail", "last unattended-upgrade run 8 days ago (limit 7)")
    compliance_config.compliance.unattended_upgrade_max_age_days = 14
    assert outcome(compliance_config, "lx-unattended-upgrade-recent",
                   patch__unattended_upgrade__age_s=8 * DAY)[0] == "pass"


def test_reboot_pending_within_and_beyond_the_limit(compliance_config):
    pending = {"required": True, "since": 1, "packages": ["libc6"]}
    assert outcome(compliance_config, "lx-reboot-pending", patch__reboot={**pending, "age_s": DAY}) == (
        "pass", "reboot required by libc6 for 1.0 days (within 3)")
    assert outcome(compliance_config, "lx-reboot-pending", patch__reboot={**pending, "age_s": 4 * DAY}) == (
        "fail", "reboot required by libc6 for 4 days (limit 3)")


def test_kernel_current_fail_grace_and_not_applicable(compliance_config):
    older = {"patch__kernel__running": "6.1.0-27-amd64"}
    assert outcome(compliance_config, "lx-kernel-current", **older) == (
        "fail", "running kernel 6.1.0-27-amd64, newest installed 6.1.0-28-amd64, installed 20 days ago")
    assert outcome(compliance_config, "lx-kernel-current", **older, patch__kernel__newest_age_s=DAY) == (
        "pass", "kernel 6.1.0-28-amd64 installed 1.0 days ago, reboot pending (within 3 days)")
    # A running kernel that is no longer installed at all gets no grace.
    assert outcome(compliance_config, "lx-kernel-current", patch__kernel__running="6.1.0-9-amd64",
                   patch__kernel__newest_age_s=DAY)[0] == "fail"
    container = {"running": "6.18.44-host", "container": "systemd-nspawn", "installed": [], "newest": None,
                 "newest_installed_at": None, "newest_age_s": None}
    assert outcome(compliance_config, "lx-kernel-current", patch__kernel=container) == (
        "not_applicable",
        "container (systemd-nspawn): the running kernel 6.18.44-host is the host's, "
        "and no kernel package of its own boots",
    )
    no_pkg = {**container, "container": None}
    assert outcome(compliance_config, "lx-kernel-current", patch__kernel=no_pkg) == (
        "not_applicable", "no linux-image package installed: kernel 6.18.44-host is not managed by dpkg")


def test_facts_from_an_older_werne_facts_are_an_error_not_a_pass(compliance_config):
    facts = laptop_facts()
    del facts["patch"]
    ctx = make_ctx(compliance_config)
    for rid in PATCH_RULES:
        r = evaluate_rule(load_baselines().rule(rid), DeviceFacts("lap01", "laptops", facts), ctx)
        assert r.status == "error", rid
        assert r.evidence.startswith("no evidence: fact patch.") and r.evidence.endswith(" not collected"), r.evidence
