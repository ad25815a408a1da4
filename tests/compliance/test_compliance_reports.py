"""Reports: golden CSV, JSON and JUnit files; the JSON against its schema; JUnit through an XML parser.

Set WERNE_UPDATE_GOLDEN=1 to rewrite the golden files after an intended change (then review the diff).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from compliance.reports import render, write_report
from compliance.reports.schema_check import SCHEMA_FILE, validate
from tests.golden import GOLDEN_DIR, assert_golden
from tests.parts import require

GOLDEN = GOLDEN_DIR / "compliance"
# Hashes change with every edit of a baseline file and the tool version with every release;
# the history tests check them. Everything else in the files is compared byte for byte.
VOLATILE_RUN_KEYS = ("baselines_hash", "record_hash", "prev_hash", "tool_version")


def _normalise_json(data: bytes) -> str:
    doc = json.loads(data)
    for k in VOLATILE_RUN_KEYS:
        if doc["run"].get(k) is not None:
            doc["run"][k] = f"<{k}>"
    return json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def _golden(name: str, actual: bytes) -> None:
    assert_golden(GOLDEN / name, actual)


def test_csv_golden_and_german_excel(compliance_db, two_runs):
    data = render(compliance_db, two_runs[1], "csv")
    _golden("report.csv", data)
    text = data.decode("utf-8")
    assert text.startswith("\ufeffrun;device;name;fleet;school")
    lines = text.splitlines()
    assert len(lines) == 1 + 3 * 24 + 4 * 6  # one row per device and rule
    assert all(line.count(";") >= 15 for line in lines[:5])


def test_csv_neutralises_formula_cells(compliance_db, compliance_config):
    from tests.fixtures.compliance import fleet, store_run

    devs = fleet(1, 0)
    devs[0].name = '=HYPERLINK("http://x")'
    rid = store_run(compliance_db, compliance_config, devs)
    import csv
    import io

    rows = list(csv.reader(io.StringIO(render(compliance_db, rid, "csv").decode("utf-8-sig")), delimiter=";"))
    assert {r[2] for r in rows[1:]} == {'\'=HYPERLINK("http://x")'}


def test_json_golden_and_schema(compliance_db, two_runs):
    data = render(compliance_db, two_runs[1], "json")
    doc = json.loads(data)
    assert validate(doc) == []
    _golden("report.json", _normalise_json(data).encode())
    # Newly failing: real failures first (most severe first), then what could not be checked.
    assert [c["device"] + "/" + c["rule"] for c in doc["changes"]["newly_failing"]] == [
        "ZDTEST00000/ios-passcode",
        "lap02/lx-ssh-no-root-login",
        "ZDTEST00001/ios-hardware-encryption",
        "ZDTEST00001/ios-os-version",
        "ZDTEST00001/ios-passcode",
        "ZDTEST00001/ios-profiles",
        "ZDTEST00001/ios-supervised",
    ]
    assert [c["device"] + "/" + c["rule"] for c in doc["changes"]["fixed"]] == ["lap03/lx-login-banner"]
    assert [t["run"] for t in doc["trend"]] == list(two_runs)


def test_schema_checker_finds_violations(compliance_db, two_runs):
    doc = json.loads(render(compliance_db, two_runs[1], "json"))
    doc["summary"]["counts"]["fail"] = -1
    doc["devices"][0]["results"][0]["status"] = "okay"
    del doc["trend"]
    assert validate(doc) == [
        "$: missing 'trend'",
        "$.devices[0].results[0].status: 'okay' not one of "
        "['pass', 'fail', 'error', 'not_applicable', 'unreachable', 'waived']",
        "$.summary.counts.fail: below 0",
    ]


def test_schema_file_agrees_with_jsonschema_if_installed(compliance_db, two_runs):
    try:
        import jsonschema
    except ImportError:  # it comes with ansible-lint, a dev dependency
        require("jsonschema", "the Python package is not installed; pip install -e '.[dev]'")
    doc = json.loads(render(compliance_db, two_runs[1], "json"))
    jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()))


def test_junit_golden_and_structure(compliance_db, two_runs):
    data = render(compliance_db, two_runs[1], "junit")
    _golden("report.junit.xml", data)
    root = ET.fromstring(data)
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 7
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == int(root.get("tests")) == 3 * 24 + 4 * 6
    fails = [
        (c.get("classname"), c.get("name").split(":")[0]) for c in cases if c.find("failure") is not None
    ]
    errors = [c.find("error").get("type") for c in cases if c.find("error") is not None]
    assert sorted(fails) == [("ipads.ZDTEST00000", "ios-passcode"), ("laptops.lap02", "lx-ssh-no-root-login")]
    assert errors == ["unreachable"] * 5
    assert root.get("failures") == "2" and root.get("errors") == "5" and root.get("skipped") == "0"
    for s in suites:
        assert int(s.get("tests")) == len(s.findall("testcase"))


def test_unknown_run_and_format_are_input_errors(compliance_db, two_runs, tmp_path):
    from compliance.errors import ReportFormatError, RunNotFoundError

    with pytest.raises(RunNotFoundError, match="no complete compliance run with id 99"):
        write_report(compliance_db, 99, "csv", tmp_path / "x.csv")
    with pytest.raises(ReportFormatError):
        render(compliance_db, None, "pdf")
    assert not (tmp_path / "x.csv").exists()


def test_report_cli_writes_file(run_cli, compliance_db, two_runs, compliance_config, tmp_path):
    from tests.fixtures.site import write_config

    cfg = write_config(tmp_path / "w.toml", compliance_config.inventory_dir, compliance_config.state_dir)
    out = tmp_path / "r.xml"
    res = run_cli("report", "--format", "junit", "--out", str(out), config=cfg)
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == render(compliance_db, two_runs[1], "junit")
    res = run_cli("report", "--run", "77", "--format", "csv", "--out", str(tmp_path / "y.csv"), config=cfg)
    assert (res.exit_code, res.stderr) == (2, "Error: no complete compliance run with id 77\n")


def test_diff_cli(run_cli, compliance_db, two_runs, compliance_config, tmp_path):
    from tests.fixtures.site import write_config

    cfg = write_config(tmp_path / "w.toml", compliance_config.inventory_dir, compliance_config.state_dir)
    res = run_cli("compliance", "diff", str(two_runs[0]), str(two_runs[1]), "--json", config=cfg)
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["fixed"] == [
        {
            "device": "lap03",
            "rule": "lx-login-banner",
            "before": "fail",
            "after": "pass",
            "evidence": "banner.present=True; sshd.banner=/etc/issue.net",
        }
    ]
    assert len(d["newly_failing"]) == 7 and d["still_failing"] == []
    res = run_cli("compliance", "diff", str(two_runs[0]), str(two_runs[1]), config=cfg)
    assert res.output.splitlines()[0] == "newly failing (7):"


def test_ipads_to_replace_are_listed_per_school(compliance_db, compliance_config):
    """iPads whose model Apple no longer updates (ios-model-supported fails) are listed under their
    school, in the JSON and as the HTML's "iPads to replace" table; supported ones are not."""
    from html.parser import HTMLParser

    from tests.fixtures.compliance import fleet, store_run

    devs = fleet()
    ipads = [d for d in devs if d.fleet == "ipads"]
    old, current = ipads[0], ipads[1]
    old.facts["catalogue"] = {"model": "iPad7,5", "offered": [], "known": True, "replace_by": "iPad13,18"}
    current.facts["catalogue"] = {"model": "iPad13,18", "offered": ["18.3"], "known": True, "replace_by": ""}
    run_id = store_run(compliance_db, compliance_config, devs)
    doc = json.loads(render(compliance_db, run_id, "json"))
    assert validate(doc) == []
    replace = {s["school"]: [d["id"] for d in s["replace"]] for s in doc["schools"]}
    assert replace == {old.school: [old.device], current.school: []}
    (row,) = next(s for s in doc["schools"] if s["school"] == old.school)["replace"]
    assert row["group"] == old.group and "replace by a model Apple still updates (e.g. iPad13,18)" in row["evidence"]

    class Rows(HTMLParser):
        rows: list[tuple[str | None, str | None]] = []
        in_table = False

        def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
            a = dict(attrs)
            if tag == "table":
                self.in_table = a.get("id") == "replace"
            elif tag == "tr" and self.in_table and "data-device" in a:
                self.rows.append((a.get("data-school"), a.get("data-device")))

    p = Rows()
    p.feed(render(compliance_db, run_id, "html").decode())
    assert p.rows == [(old.school, old.device)]
