"""The rule engine on synthetic facts: each rule passes on a compliant device and fails on its drift."""

from __future__ import annotations

from datetime import timedelta

from compliance.engine import evaluate_rule
from compliance.facts import DeviceFacts, lookup
from compliance.rules import load_baselines
from tests.fixtures.compliance import NOW, evaluate_fleet, fleet, ipad_facts, laptop_facts, make_ctx


def statuses(results, device=None):
    return {(r.device, r.rule_id): r.status for r in results if device is None or r.device == device}


def test_compliant_fleet_passes_every_rule(compliance_config):
    results = evaluate_fleet(compliance_config, fleet())
    bad = [(r.device, r.rule_id, r.status, r.evidence) for r in results if r.status != "pass"]
    assert bad == []
    assert len(results) == 3 * 24 + 4 * 6


def test_root_login_drift_fails_exactly_that_rule_on_that_host(compliance_config):
    devs = fleet()
    devs[1].facts = laptop_facts(sshd__permitrootlogin="yes")
    results = evaluate_fleet(compliance_config, devs)
    failing = [(r.device, r.rule_id) for r in results if r.status != "pass"]
    assert failing == [("lap02", "lx-ssh-no-root-login")]
    r = next(r for r in results if r.status == "fail")
    assert "permitrootlogin=yes" in r.evidence


DRIFTS = {
    "lx-ssh-no-password-auth": {"sshd__passwordauthentication": "yes"},
    "lx-ssh-modern-crypto": {"sshd__ciphers": ["aes128-cbc", "aes256-gcm@openssh.com"]},
    "lx-ssh-max-auth-tries": {"sshd__maxauthtries": "6"},
    "lx-nft-inbound-deny": {
        "nft__input_chains": [{"family": "inet", "table": "filter", "chain": "input", "policy": "accept"}]
    },
    "lx-auto-updates": {
        "apt__periodic": {
            "APT::Periodic::Update-Package-Lists": "1",
            "APT::Periodic::Unattended-Upgrade": "0",
        }
    },
    "lx-screen-lock": {"screen_lock__idle_delay_s": 3600},
    "lx-pwquality": {"pwquality__minlen": 8},
    "lx-usb-storage-blocked": {"usb_storage__blocked": False},
    "lx-sysctl-hardening": {"sysctl__kernel.sysrq": "1"},
    "lx-login-banner": {"sshd__banner": "none"},
    "lx-local-admin": {"accounts__admin": {"name": "admin", "exists": False, "sudo": False}},
    "lx-disk-encryption": {"luks": {"present": False, "crypttab": [], "devices": []}},
    "vpn-handshake-fresh": {"vpn__handshake_age_s": 5 * 3600},
    "vpn-full-tunnel": {"wg__allowed_ips": ["10.77.0.0/24", "192.168.10.0/24"]},
    "vpn-key-age": {"vpn__key_age_days": 120.0},
    "lx-security-updates": {"patch__pending__security_count": 2},
    "lx-unattended-upgrade-recent": {"patch__unattended_upgrade__age_s": 9 * 86400},
    "lx-reboot-pending": {"patch__reboot": {"required": True, "age_s": 5 * 86400, "packages": ["libc6"]}},
    "lx-kernel-current": {"patch__kernel__running": "6.1.0-27-amd64"},
    "lx-recovery-key": {"recovery_key__check_result": "failed"},
    "lx-vulns-fixed": {"vulns__findings": [
        {"id": "CVE-2024-0001", "source": "openssl", "packages": ["libssl3"], "installed": "3.0.14-1~deb12u2",
         "fixed": "3.0.15-1~deb12u1", "urgency": "medium", "status": "resolved",
         "fix_since": "2026-11-01T00:00:00+00:00"}]},
}


def test_each_laptop_drift_fails_only_its_rule(compliance_config):
    rules = load_baselines().for_fleet("laptops")
    # lx-evidence-fresh judges the evidence's age, not a fact: tests/compliance/test_home_evidence.py drifts it.
    # lx-vulns-unfixed lists, never fails (tests/compliance/test_vulns.py).
    assert {r.id for r in rules} == set(DRIFTS) | {"lx-ssh-no-root-login", "lx-evidence-fresh", "lx-vulns-unfixed"}
    ctx = make_ctx(compliance_config)
    for rule_id, override in DRIFTS.items():
        dev = DeviceFacts("lap01", "laptops", laptop_facts(**override))
        failing = {r.id: evaluate_rule(r, dev, ctx) for r in rules}
        bad = {k: v.status for k, v in failing.items() if v.status != "pass"}
        if rule_id == "lx-disk-encryption":  # no volume: its recovery key is not applicable, not a second fail
            assert bad.pop("lx-recovery-key") == "not_applicable"
        assert bad == {rule_id: "fail"}, rule_id


def test_missing_fact_is_an_error_naming_it(compliance_config):
    facts = laptop_facts()
    facts["sshd"] = {"error": "sshd -T exited 255"}
    dev = DeviceFacts("lap01", "laptops", facts)
    rule = load_baselines().rule("lx-ssh-no-root-login")
    r = evaluate_rule(rule, dev, make_ctx(compliance_config))
    assert r.status == "error"
    assert r.evidence == "no evidence: fact sshd.permitrootlogin (sshd -T exited 255) not collected"


def test_luks_missing_can_be_not_applicable_by_config(compliance_config):
    dev = DeviceFacts("lap01", "laptops", laptop_facts(luks={"present": False}, virt="systemd-nspawn"))
    rule = load_baselines().rule("lx-disk-encryption")
    assert evaluate_rule(rule, dev, make_ctx(compliance_config)).status == "fail"
    compliance_config.compliance.luks_missing = "not_applicable"
    r = evaluate_rule(rule, dev, make_ctx(compliance_config))
    assert (r.status, "systemd-nspawn" in r.evidence) == ("not_applicable", True)


def test_vpn_without_gateway_evidence_is_an_error(compliance_config):
    dev = DeviceFacts(
        "lap01", "laptops", laptop_facts(vpn={"evidence": False, "reason": "gateway unreachable"})
    )
    rule = load_baselines().rule("vpn-handshake-fresh")
    r = evaluate_rule(rule, dev, make_ctx(compliance_config))
    assert (r.status, r.evidence) == ("error", "no VPN evidence from the gateway: gateway unreachable")


def test_ipad_without_passcode_fails(compliance_config):
    devs = fleet(n_laptops=0, n_ipads=2)
    devs[0].facts = ipad_facts(
        security__passcode_present=False,
        security__passcode_compliant=False,
        security__hardware_encryption_caps=1,
    )
    failing = {(r.device, r.rule_id) for r in evaluate_fleet(compliance_config, devs) if r.status != "pass"}
    assert failing == {("ZDTEST00000", "ios-passcode"), ("ZDTEST00000", "ios-hardware-encryption")}


def test_ipad_version_profiles_and_supervision(compliance_config):
    compliance_config.compliance.min_ipados = "18.2"
    devs = fleet(n_laptops=0, n_ipads=1)
    devs[0].facts = ipad_facts(
        device__is_supervised=False,
        profiles__identifiers=[
            "de.werne.ipad.passcode",
            "de.werne.ipad.wifi",
            "com.evil.proxy",
            "com.apple.mdm",
        ],
    )
    res = {r.rule_id: r for r in evaluate_fleet(compliance_config, devs)}
    assert {k for k, v in res.items() if v.status == "fail"} == {
        "ios-os-version",
        "ios-supervised",
        "ios-profiles",
    }
    assert res["ios-profiles"].evidence == (
        "missing de.werne.ipad.restrictions,de.werne.ipad.webfilter; unknown com.evil.proxy"
    )
    assert "want version_ge 18.2" in res["ios-os-version"].evidence


def test_offline_ipad_is_unreachable_then_out_of_contact(compliance_config):
    compliance_config.compliance.contact_max_days = 14
    last_seen = NOW - timedelta(days=2)
    dev = DeviceFacts(
        "ZDTEST00001",
        "ipads",
        {},
        reachable=False,
        reason="no answer within 60s",
        school="gs-demo",
        group="pupil",
        last_seen=last_seen,
    )
    res = {r.rule_id: r for r in evaluate_fleet(compliance_config, [dev], now=NOW)}
    assert {r.status for k, r in res.items() if k != "ios-in-contact"} == {"unreachable"}
    assert res["ios-in-contact"].status == "pass"
    # 13 days later (clock injection): now 15 days since last seen -> out of contact
    res = {r.rule_id: r for r in evaluate_fleet(compliance_config, [dev], now=NOW + timedelta(days=13))}
    assert res["ios-in-contact"].status == "fail"
    assert res["ios-in-contact"].evidence.startswith(
        "out of contact: last seen 2026-11-18 02:00 UTC, 15 days ago"
    )


def test_lookup_matches_dotted_keys():
    assert lookup({"sysctl": {"net.ipv4.tcp_syncookies": "1"}}, "sysctl.net.ipv4.tcp_syncookies") == "1"
    assert lookup({"a": {"b": {"c": 3}}}, "a.b.c") == 3


def test_fact_shape_check_finds_a_missing_key_and_a_wrong_type():
    """The check the lab test holds real werne_facts output to (test_compliance_lab) can fail."""
    from tests.fixtures.compliance import fact_mismatches, fact_types

    assumed = fact_types(laptop_facts())
    assert len(assumed) > 50 and "sshd.ciphers[]" in assumed and "nft.input_chains[].policy" in assumed
    rules = ["sshd.permitrootlogin", "apt.periodic.APT::Periodic::Unattended-Upgrade"]
    assert fact_mismatches(assumed, rules, laptop_facts()) == []
    broken = laptop_facts(sshd__maxauthtries=3, nft__input_chains=[{"family": "inet"}])
    del broken["sshd"]["permitrootlogin"]
    assert fact_mismatches(assumed, rules, broken) == [
        "sshd.permitrootlogin: missing (sshd.permitrootlogin)",
        "sshd.maxauthtries: ['int'] where the tests assume str",
        "nft.input_chains[].table: missing (table)",
        "nft.input_chains[].chain: missing (chain)",
        "nft.input_chains[].policy: missing (policy)",
        "nft.input_chains[].priority: missing (priority)",
        "rule fact sshd.permitrootlogin: missing (sshd.permitrootlogin)",
    ]
