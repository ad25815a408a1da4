"""OSCAL assessment results: valid against NIST's OSCAL 1.1.3 schema (the version BSI's Kernel catalogue
declares), read back by compliance-trestle (a library werne did not write) with the same counts,
findings citing Grundschutz++ and IT-Grundschutz, unmapped rules kept, waivers as risks, the
derived BSI data reproducible and refusing controls the catalogue lacks."""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import date, timedelta

import pytest

from compliance.errors import BSIDataError
from compliance.history import load_run
from compliance.oscal import render_oscal
from compliance.oscal.assessment import OSCAL_VERSION, build_assessment_results
from compliance.oscal.catalogue import DATA_FILE, load_catalogue
from compliance.reports import render
from compliance.waivers import Waiver, WaiverSet
from tests.fixtures.compliance import NOW, fleet, ipad_facts, laptop_facts, store_run
from tests.fixtures.oscal import SCHEMA, TRESTLE_PY, TRESTLE_READ, schema_errors, trestle_read
from tests.fixtures.site import REPO
from tests.parts import require_file

SCHEMA_SHA256 = "974ca0d869fe26538b4e58c4e09f9f91d4144144d3a0cf1bc0a7f817605e2e20"
SHARED_REF = REPO.parent / "shared" / "reference" / "bsi-grundschutz"


@pytest.fixture
def mixed_run(compliance_db, compliance_config):  # type: ignore[no-untyped-def]
    """A run with a failure of a mapped rule, an unmapped rule failing (lx-sysctl-hardening cites
    no Grundschutz++ control), an unreachable iPad, an active and an expired waiver."""
    devs = fleet()
    devs[0].facts = laptop_facts(sshd__permitrootlogin="yes")
    devs[1].facts = laptop_facts(banner__present=False)
    sysctl = devs[2].facts["sysctl"]
    sysctl[next(iter(sysctl))] = "999"
    devs[3].facts = ipad_facts(security__passcode_present=False, security__passcode_compliant=False)
    devs[4].reachable, devs[4].facts, devs[4].reason = False, {}, "no answer within 60s"
    waivers = WaiverSet([
        Waiver(id="banner-lap02", rule="lx-login-banner", devices=["lap02"], justification="legal text pending",
               approved_by="ISB Muster", expires=date(2026, 12, 31)),
        Waiver(id="passcode-old", rule="ios-passcode", devices=["school:*", "ZDTEST00000"],
               justification="loan device, no pupils", approved_by="ISB Muster", expires=date(2026, 1, 31)),
    ], "digest-of-waivers")
    return store_run(compliance_db, compliance_config, devs, waivers=waivers)


def test_schema_is_nists_oscal_1_1_3_as_recorded():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert SCHEMA_SHA256 in (SCHEMA.parent / "SOURCE.md").read_text(encoding="utf-8")
    assert json.loads(SCHEMA.read_text(encoding="utf-8"))["$id"] == "http://csrc.nist.gov/ns/oscal/1.1.3/oscal-ar-schema.json"
    # The version BSI's catalogue declares is the one werne writes.
    assert load_catalogue().oscal_version == OSCAL_VERSION == "1.1.3"


def test_document_validates_and_counts_match_the_run(compliance_db, mixed_run):
    doc = json.loads(render(compliance_db, mixed_run, "oscal"))
    assert schema_errors(doc) == []
    run = load_run(compliance_db, mixed_run)
    result = doc["assessment-results"]["results"][0]
    counts = run.summary["counts"]
    assert len(result["observations"]) == len(run.results) == sum(counts.values())
    assert len(result["findings"]) == counts["fail"] + counts["error"] + counts["unreachable"] > 0
    assert {i["props"][0]["value"] for i in result["local-definitions"]["inventory-items"]} == set(run.devices)


def test_findings_cite_gspp_and_itgs_and_keep_unmapped_rules(compliance_db, mixed_run):
    doc = json.loads(render(compliance_db, mixed_run, "oscal"))
    findings = {next(p["value"] for p in f["props"] if p["name"] == "rule") + "@" + f["title"]: f
                for f in doc["assessment-results"]["results"][0]["findings"]}
    root = next(f for k, f in findings.items() if k.startswith("lx-ssh-no-root-login@"))
    props = [(p["name"], p["value"]) for p in root["props"]]
    assert root["target"] == {"type": "statement-id", "target-id": "KONF.5.1_stm",
                              "title": "KONF.5.1 " + load_catalogue().title("KONF.5.1"),
                              "status": {"state": "not-satisfied", "reason": "fail"}}
    assert ("it-grundschutz", "SYS.2.3.A1") in props and ("grundschutz-plus-plus", "KONF.5.1") in props
    # Controls reached only through BSI's mapping are cited with the requirement they come from.
    assert any(n == "mapped-from" and v.startswith("DET.3.1.2 <- SYS.2.3.A1") for n, v in props)
    unmapped = next(f for k, f in findings.items() if k.startswith("lx-sysctl-hardening@"))
    assert unmapped["target"]["target-id"] == "werne-rule-lx-sysctl-hardening"
    assert any(p["name"] == "unmapped" for p in unmapped["props"])
    meta = {(p["name"], p["value"]) for p in doc["assessment-results"]["metadata"]["props"]}
    assert ("unmapped-rule", "lx-sysctl-hardening") in meta
    assert ("signature", "unsigned") in meta


def test_waivers_are_risks_with_their_expiry(compliance_db, mixed_run):
    doc = json.loads(render(compliance_db, mixed_run, "oscal"))
    risks = {r["props"][0]["value"]: r for r in doc["assessment-results"]["results"][0]["risks"]}
    assert risks["banner-lap02"]["status"] == "deviation-approved"
    assert risks["banner-lap02"]["deadline"] == "2026-12-31T23:59:59Z"
    assert risks["passcode-old"]["status"] == "open"  # expired: the failure is back, the risk is open
    assert risks["passcode-old"]["deadline"].startswith("2026-01-31")
    waived_obs = {o["uuid"] for o in doc["assessment-results"]["results"][0]["observations"]
                  if {"name": "status", "ns": o["props"][0]["ns"], "value": "waived"} in o["props"]}
    assert {r["observation-uuid"] for r in risks["banner-lap02"]["related-observations"]} == waived_obs


def test_validator_rejects_broken_documents(compliance_db, mixed_run):
    """The schema check is not vacuous: wrong values, a missing required part, a bad UUID fail."""
    doc = json.loads(render(compliance_db, mixed_run, "oscal"))
    doc["assessment-results"]["results"][0]["findings"][0]["target"]["status"]["state"] = "MET"
    assert schema_errors(doc)
    doc = json.loads(render(compliance_db, mixed_run, "oscal"))
    del doc["assessment-results"]["import-ap"]
    assert schema_errors(doc)
    doc = json.loads(render(compliance_db, mixed_run, "oscal"))
    doc["assessment-results"]["results"][0]["observations"][0]["uuid"] = "not-a-uuid"
    assert schema_errors(doc)


def test_a_run_with_no_results_is_still_a_valid_document(compliance_db, compliance_config):
    rid = store_run(compliance_db, compliance_config, [])
    doc = json.loads(render(compliance_db, rid, "oscal"))
    assert schema_errors(doc) == []
    result = doc["assessment-results"]["results"][0]
    assert "findings" not in result and "observations" not in result
    assert result["remarks"] == "The run has no results: nothing was judged."


def test_same_run_same_document(compliance_db, mixed_run):
    assert render_oscal(compliance_db, mixed_run) == render_oscal(compliance_db, mixed_run)


def test_trestle_reads_it_back_with_the_same_counts(compliance_db, mixed_run, tmp_path):
    py = require_file("compliance-trestle", TRESTLE_PY, hint="make setup installs it into .tools/trestle")
    out = tmp_path / "ar.json"
    out.write_bytes(render(compliance_db, mixed_run, "oscal"))
    doc = json.loads(out.read_text(encoding="utf-8"))["assessment-results"]
    seen = trestle_read(out)
    result = doc["results"][0]
    assert seen == {
        "trestle_oscal": "1.1.3", "oscal_version": "1.1.3",
        "findings": len(result["findings"]), "observations": len(result["observations"]),
        "risks": len(result["risks"]),
        "targets": sorted({f["target"]["target-id"] for f in result["findings"]}),
        "deadlines": ["2026-01-31", "2026-12-31"],
    }
    # And trestle refuses what its OSCAL 1.1.3 models do not allow, so its reading is a real check.
    bad = json.loads(out.read_text(encoding="utf-8"))
    bad["assessment-results"]["results"][0]["findings"][0]["target"]["status"]["state"] = "MET"
    out.write_text(json.dumps(bad), encoding="utf-8")
    proc = subprocess.run([str(py), "-c", TRESTLE_READ, str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0


def test_catalogue_refuses_a_mapping_to_a_control_it_lacks(tmp_path):
    data = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    data["itgs_to_gspp"]["SYS.2.3.A1"]["GC.99.1"] = "subset-of"
    bad = tmp_path / "bsi-gspp.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(BSIDataError, match="mapping SYS.2.3.A1 -> GC.99.1: the Kernel catalogue has no control"):
        load_catalogue(bad)


def test_derivation_refuses_pairs_naming_absent_controls():
    from tools.derive_bsi_mapping import mapping_pairs

    collection = {"mapping-collection": {"mappings": [{"maps": [
        {"relationship": "subset-of", "sources": [{"id-ref": "SYS.2.3.A1-UA.2"}],
         "targets": [{"id-ref": "KONF.5.1"}, {"id-ref": "GC.1.1"}]}]}]}}
    mapping, refused = mapping_pairs(collection, {"KONF.5.1"})
    assert mapping == {"SYS.2.3.A1": {"KONF.5.1": "subset-of"}}
    assert refused == [["SYS.2.3.A1", "GC.1.1"]]


def test_derived_file_is_what_the_script_makes_from_bsis_files():
    require_file("BSI Grundschutz++ sources", SHARED_REF / "ITGS-to-GS++-mapping_collection.json",
                 hint="../shared/reference/bsi-grundschutz")
    from tools.derive_bsi_mapping import derive

    assert json.loads(DATA_FILE.read_text(encoding="utf-8")) == derive(SHARED_REF)


def test_every_rule_is_cited_or_listed_unmapped(compliance_db, mixed_run):
    run = load_run(compliance_db, mixed_run)
    cat = load_catalogue()
    doc = build_assessment_results(run, cat)
    unmapped = {p["value"] for p in doc["assessment-results"]["metadata"]["props"] if p["name"] == "unmapped-rule"}
    cited = {r for r, meta in run.rules.items() if cat.cite(meta["references"])}
    assert cited | unmapped == set(run.rules) and not cited & unmapped
    assert NOW - timedelta(days=1) < run.started_at
