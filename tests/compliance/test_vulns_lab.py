"""Known vulnerabilities on a real lab laptop: a package from the lab's package source with a CVE in
the imported tracker data shows up after the nightly run (real werne_facts over SSH) and is gone
after the fixed version is published and provisioned (unattended-upgrade from the security suite).
Then the precision check: werne's matcher and the real `debsecan` on the same laptop's dpkg status
and the same data (tracker entries made for every source package installed on the laptop, with fixed
versions just above, equal to and below the installed ones, in dpkg's trickier spellings), side by side."""

from __future__ import annotations

import json
import os
import random
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from compliance.vulns.feeds import parse
from compliance.vulns.match import match
from compliance.vulns.snapshots import Snapshot
from lab.aptrepo import build_probe_package
from tests.compliance.debsecan_data import write_source
from tests.compliance.tracker_data import tracker_entry, tracker_json

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PKG = "werne-vuln-probe"
CVE = "CVE-2026-25025"


def build_deb(workdir: Path, version: str) -> Path:
    return build_probe_package(workdir, PKG, version, "werne vulnerability probe")


@pytest.fixture(scope="module")
def vuln_lab(lab_factory, lab_config, werne_cli):  # type: ignore[no-untyped-def]
    lab = lab_factory(1, gateway=False)
    cfg = lab_config(lab, extra='\n[compliance]\nluks_missing = "not_applicable"\n')
    r = werne_cli(cfg, "laptop", "preflight", "--all", "--accept-new")
    assert r.exit_code == 0, r.output
    return lab, cfg


def on_laptop(lab, *argv: str, timeout: float = 300) -> str:  # type: ignore[no-untyped-def]
    p = lab.exec("lap01", list(argv), timeout=timeout)
    assert p.returncode == 0, (argv, p.stdout[-400:], p.stderr[-400:])
    return p.stdout


def findings(werne_cli, cfg) -> list[tuple[str, str, str, str | None]]:  # type: ignore[no-untyped-def]
    r = werne_cli(cfg, "laptop", "vulns", "show", "lap01", "--json")
    assert r.exit_code == 0, r.output
    return [(f["id"], f["source"], f["installed"], f["fixed"]) for f in json.loads(r.output)["findings"]]


def nightly(cfg):  # type: ignore[no-untyped-def]
    from compliance.history import load_run
    from compliance.run import run_compliance
    from core.config import load_config
    from core.db import Database
    from core.inventory import load_inventory

    config = load_config(cfg)
    db = Database(config.database_url)
    try:
        s = run_compliance(config, db, load_inventory(config.inventory_dir), ("laptops",))
        return {rule: (v.status, v.evidence) for (dev, rule), v in load_run(db, s.run_id).results.items()}
    finally:
        db.dispose()


def test_a_vulnerable_package_shows_up_then_goes_with_the_fix(vuln_lab, werne_cli, tmp_path):
    from lab.aptrepo import BASE_SUITE, SECURITY_SUITE, publish_package

    lab, cfg = vuln_lab
    publish_package(lab.lab_dir, build_deb(tmp_path, "1.0-1"), BASE_SUITE)
    on_laptop(lab, "apt-get", "update")
    on_laptop(lab, "apt-get", "install", "-y", PKG)
    tracker = tmp_path / "tracker.json"
    tracker.write_text(tracker_json({PKG: {CVE: tracker_entry(CVE, "bookworm", fixed="1.0-2", urgency="high",
                                                              repo_version="1.0-1")}}))
    # Downloaded yesterday (curl -R keeps the server's time; the import takes the file's time).
    yesterday = (datetime.now(UTC) - timedelta(days=1)).timestamp()
    os.utime(tracker, (yesterday, yesterday))
    r = werne_cli(cfg, "laptop", "vulns", "import", str(tracker))
    assert r.exit_code == 0 and r.output.startswith("snapshot 1: debian data of "), r.output

    before = nightly(cfg)
    status, evidence = before["lx-vulns-fixed"]
    assert status == "fail" and f"{CVE} {PKG} 1.0-1 (fixed in 1.0-2, high)" in evidence, evidence
    assert findings(werne_cli, cfg) == [(CVE, PKG, "1.0-1", "1.0-2")]
    r = werne_cli(cfg, "laptop", "vulns", "--json")
    assert [(p["source"], p["laptops"]) for p in json.loads(r.output)["packages"]] == [(PKG, {"lap01": "1.0-1"})]
    r = werne_cli(cfg, "laptop", "packages", "lap01")
    assert f"{PKG};1.0-1;" in r.output and r.output.count("\n") > 100

    # The fixed version in the security suite; the laptop's daily list refresh sees it, the
    # provisioning run's unattended-upgrade installs it.
    publish_package(lab.lab_dir, build_deb(tmp_path, "1.0-2"), SECURITY_SUITE)
    on_laptop(lab, "apt-get", "update")
    r = werne_cli(cfg, "laptop", "provision", "lap01")
    assert r.exit_code == 0, r.output
    assert on_laptop(lab, "dpkg-query", "-W", "-f", "${Version}", PKG) == "1.0-2"
    after = nightly(cfg)
    assert after["lx-vulns-fixed"][0] == "pass", after["lx-vulns-fixed"]
    assert findings(werne_cli, cfg) == []


def synthetic_tracker(sources: dict[str, str], rng: random.Random) -> tuple[str, dict[str, str]]:
    """A tracker JSON with one entry per installed source package, and what each entry should mean:
    affected (fixed above the installed version, or no fix) or not (fixed equal or below, or "0")."""
    data: dict[str, dict[str, object]] = {}
    expect: dict[str, str] = {}
    for i, (source, version) in enumerate(sorted(sources.items())):
        vid = f"CVE-2026-{70000 + i}"
        kind = rng.choice(["above-deb", "above-epoch", "below-tilde", "equal", "open", "never", "below-rev"])
        epoch, _, rest = version.rpartition(":") if ":" in version else ("", "", version)
        upstream, _, rev = rest.rpartition("-") if "-" in rest else (rest, "", "")
        fixed = {"above-deb": version + "+deb12u1",
                 "above-epoch": f"{int(epoch or 0) + 1}:{rest}",
                 "below-tilde": version + "~",
                 "equal": version,
                 "below-rev": (f"{epoch}:" if epoch else "") + upstream + ("-0" if rev else "~0"),
                 "open": None, "never": "0"}[kind]
        entry = tracker_entry(vid, "bookworm", fixed=fixed if kind != "never" else "0", repo_version=version,
                              urgency=rng.choice(["low", "medium", "high", "not yet assigned"]))
        if kind == "never":
            entry["releases"]["bookworm"] = {"status": "resolved", "repositories": {"bookworm": version},
                                             "fixed_version": "0", "urgency": "unimportant"}
        data[source] = {vid: entry}
        expect[vid] = "affected" if kind in ("above-deb", "above-epoch", "open") else "not affected"
    return tracker_json(data), expect


def test_precision_against_debsecan_on_the_same_laptop_and_data(vuln_lab, tmp_path):
    from tests.parts import require_tool

    require_tool("debsecan", hint="scripts/setup.sh installs it (Debian's own vulnerability matcher)")
    lab, _ = vuln_lab
    wf_fields = ("${binary:Package}\t${Version}\t${source:Package}\t${source:Version}\t${Architecture}"
                 "\t${db:Status-Abbrev}\n")
    rows = [ln.split("\t")[:5] for ln in on_laptop(lab, "dpkg-query", "-W", "-f", wf_fields).splitlines()
            if ln.split("\t")[5][1:2] in tuple("iUFWtH")]
    status = tmp_path / "status"
    status.write_text(on_laptop(lab, "cat", "/var/lib/dpkg/status"), encoding="utf-8")
    sources = {(r[2] or r[0].split(":")[0]): (r[3] or r[1]) for r in rows}
    text, expect = synthetic_tracker(sources, random.Random(25))
    feed = parse(text, datetime.now(UTC))
    snap = Snapshot(0, "debian", feed.format, datetime.now(UTC), datetime.now(UTC), feed.releases, feed.counts())
    ours = {(f.id, p.split(":")[0]) for f in match(snap, "bookworm", rows) for p in f.packages}
    url = write_source(feed, "bookworm", tmp_path / "debsecan")
    p = subprocess.run(["debsecan", "--suite", "bookworm", "--source", url, "--status", str(status), "--format",
                        "simple", "--history", str(tmp_path / "history"), "--whitelist", str(tmp_path / "wl")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    theirs = {tuple(line.split()[:2]) for line in p.stdout.splitlines() if line.strip()}
    truth = {vid for vid, e in expect.items() if e == "affected"}
    side_by_side = {
        "installed binary packages": len(rows), "source packages": len(sources), "tracker entries": len(expect),
        "affected by construction": len(truth),
        "werne (id, package) pairs": len(ours), "debsecan (id, package) pairs": len(theirs),
        "werne ids": len({v for v, _ in ours}), "debsecan ids": len({v for v, _ in theirs}),
        "werne only": sorted(ours - theirs)[:10], "debsecan only": sorted(theirs - ours)[:10],
        "werne precision vs construction": len({v for v, _ in ours} & truth) / max(1, len({v for v, _ in ours})),
        "werne recall vs construction": len({v for v, _ in ours} & truth) / max(1, len(truth)),
    }
    (Path(os.environ.get("WERNE_BENCH_OUT", tmp_path)) / "debsecan-side-by-side.json").write_text(
        json.dumps(side_by_side, indent=2))
    print(json.dumps(side_by_side, indent=2))
    assert len(sources) > 80 and len(truth) > 20
    assert ours == theirs, side_by_side
    assert {v for v, _ in ours} == truth, side_by_side
