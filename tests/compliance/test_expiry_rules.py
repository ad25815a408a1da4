"""The compliance side of what expires: one fleet rule per item of the expiry view (SCEP CA, TLS,
signing certificate, the iPads' identities by month), only where the MDM is live, and the per-iPad
rule ios-identity-cert-valid (SYS.3.2.2.A21, Grundschutz++ BER.7.14) on the MDM identity that the
iPad's CertificateList shows (the one werne's SCEP CA issued, not any other identity it holds)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from compliance.collect_fleet import ipad_expiry_facts
from compliance.collect_ipads import _identity_fact
from compliance.engine import evaluate
from compliance.facts import DeviceFacts, EvalContext
from compliance.rules import load_baselines
from core.config import Config, load_config
from core.db import Database
from ipad.golive.scep_ca import current_ca, init_scep_ca
from tests.fixtures.enrolment_profile import install_topic
from tests.fixtures.site import write_config

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def site(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = load_config(write_config(tmp_path / "werne.toml", REPO / "inventories" / "demo", tmp_path / "state",
                                   '[mdm]\nserver_url = "https://127.0.0.1:1/mdm"\ntimeout = 2.0\n'
                                   "[dep]\nenabled = false\n"))
    init_scep_ca(cfg)
    db = Database(cfg.database_url)
    yield cfg, db
    db.dispose()


def results(cfg: Config, devices: list[DeviceFacts]) -> dict[tuple[str, str], tuple[str, str]]:
    out = evaluate(load_baselines().for_fleet("ipads"), devices, EvalContext(config=cfg, now=NOW))
    return {(r.device, r.rule_id): (r.status, r.evidence) for r in out}


def test_one_fleet_rule_per_item_only_where_the_mdm_is_live(site) -> None:  # type: ignore[no-untyped-def]
    cfg, db = site
    assert ipad_expiry_facts(cfg, db) == []  # no push certificate: not live, nothing to judge
    install_topic(cfg, "com.apple.mgmt.External.werne-test")
    facts = ipad_expiry_facts(cfg, db)
    assert [f.device for f in facts] == ["mdm-expiry-scep-ca", "mdm-expiry-tls", "mdm-expiry-signing-cert",
                                         "mdm-expiry-identities"]
    r = results(cfg, facts)
    status = {rule: st for (_dev, rule), (st, _ev) in r.items()}
    assert status == {"ios-scep-ca-valid": "pass", "ios-tls-cert-valid": "fail",
                      "ios-profile-signing-cert-valid": "fail", "ios-identity-certs-valid": "pass"}
    ca = current_ca(cfg)
    assert r[("mdm-expiry-scep-ca", "ios-scep-ca-valid")][1].startswith(
        f"SCEP CA (device identities) expires {ca.not_valid_after_utc:%Y-%m-%d}")
    assert "mdm.signing_cert_file is not set" in r[("mdm-expiry-signing-cert", "ios-profile-signing-cert-valid")][1]
    assert "ConnectionRefusedError" in r[("mdm-expiry-tls", "ios-tls-cert-valid")][1]
    # Each rule only on its own item.
    assert len(r) == 4
    cfg.compliance.scep_ca_min_days = 4000  # the CA (10 years) is now too close to its end
    assert results(cfg, facts)[("mdm-expiry-scep-ca", "ios-scep-ca-valid")][0] == "pass"  # judged as collected
    assert results(cfg, ipad_expiry_facts(cfg, db))[("mdm-expiry-scep-ca", "ios-scep-ca-valid")][0] == "fail"


def test_the_fleet_identity_rule_counts_by_month() -> None:
    item = {"item": "identities", "what": "device identities", "limit_days": 30, "error": "", "within_limit": 2,
            "expired": 1, "by_month": {"2027-01": 2, "2027-09": 5}}
    dev = DeviceFacts(device="mdm-expiry-identities", fleet="ipads", facts={"identity_certs": item}, scope="fleet")
    status, evidence = results(Config(), [dev])[("mdm-expiry-identities", "ios-identity-certs-valid")]
    assert status == "fail"
    assert evidence == ("2 enrolled iPad(s) hold an identity expiring within 30 days (1 expired): `werne mdm renew "
                        "--plan`; by month: 2027-01: 2, 2027-09: 5")


def test_each_ipad_is_judged_on_its_mdm_identity(site) -> None:  # type: ignore[no-untyped-def]
    cfg, _db = site
    ca = current_ca(cfg).subject.rfc4514_string()
    def days(n: int) -> str:
        return (NOW + dt.timedelta(days=n)).isoformat()

    cert_list = [
        {"IsIdentity": True, "issuer": "CN=Some Wi-Fi CA", "sha256": "w", "not_after": days(300)},
        {"IsIdentity": True, "issuer": ca, "sha256": "m", "not_after": days(10)},
        {"IsIdentity": False, "CommonName": "a root"},
    ]
    fact = _identity_fact(cert_list, {ca})
    assert fact is not None and fact["issuer"] == ca  # the MDM identity, not the Wi-Fi one
    ipad = DeviceFacts(device="ZDWK1DEGZD", fleet="ipads", facts={"identity": fact})
    status, evidence = results(cfg, [ipad])[("ZDWK1DEGZD", "ios-identity-cert-valid")]
    assert status == "fail"
    assert evidence.endswith("in 10 days (limit 30): its renewal did not happen: `werne mdm renew --plan`")
    fact["not_after"] = (NOW + dt.timedelta(days=200)).isoformat()
    assert results(cfg, [ipad])[("ZDWK1DEGZD", "ios-identity-cert-valid")][0] == "pass"
    rule = load_baselines().rule("ios-identity-cert-valid")
    assert rule.references.grundschutz == ["SYS.3.2.2.A21"] and rule.references.gspp == ["BER.7.14"]
    # An iPad whose CertificateList was never stored has no identity fact: the rule does not apply.
    assert ("X", "ios-identity-cert-valid") not in results(cfg, [DeviceFacts(device="X", fleet="ipads", facts={})])
