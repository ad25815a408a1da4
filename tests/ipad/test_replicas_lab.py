"""NanoMDM replicas on one PostgreSQL (issue 26), in the lab: two NanoMDM processes behind the
production nginx site (lab.proxy), which also fronts their API for werne; 200 simulated iPads enrol
with NanoMDM (Authenticate, TokenUpdate, signed by identities from the lab's SCEP CA: the ADE
endpoint's rate limit per address would make 200 enrolments from one address take minutes, and it
is not what replicas change) while replica 2 is killed (SIGKILL) and started again, then `werne ipad query` asks
them all while replica 1 is killed and started again. Afterwards every iPad is enrolled in werne
(a TokenUpdate whose event the killed replica never posted is healed by the iPad's next poll) and
no command was lost or answered twice: NanoMDM's tables hold none of the query's commands any more
(answered and deleted, -storage-options delete=1: a lost command would still be queued), each
simulated iPad ran each of its commands (a device whose report did not arrive runs the command
again at its next poll, as the protocol means it to: counted and printed, not an answer), and werne
holds one Acknowledged answer per (command, iPad), brought once by the webhook, except the few
whose event the killed replica had not yet posted: those iPads are reported not answered."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from core.config import REPO_ROOT, Config, load_config
from lab import mdm as lab_mdm
from lab import processes
from tests.fixtures.mdm_lab import lab_platforms

pytestmark = [pytest.mark.mdm, pytest.mark.postgres, pytest.mark.slow]

N_IPADS = 200
QUERY = ("DeviceInformation", "SecurityInfo", "ProfileList", "CertificateList")


@dataclass
class ReplicaLab:
    state: Path
    config_file: Path
    dsn: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def d(self) -> Path:
        return self.state / "mdm"

    def config(self) -> Config:
        return load_config(self.config_file, state_dir=self.state)

    def json(self, *args: str) -> Any:
        from cli import main

        r = CliRunner().invoke(main, ["--config", str(self.config_file), "--state-dir", str(self.state), *args,
                                      "--json"])
        assert r.output.startswith(("{", "[")), r.output
        return json.loads(r.output)

    def werne_rows(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        from sqlalchemy import text

        from core.db import Database

        db = Database(self.config().database_url)
        try:
            with db.engine.connect() as conn:
                return list(conn.execute(text(sql), params or {}).fetchall())
        finally:
            db.dispose()

    def nanomdm_count(self, table: str, uuids: list[str]) -> int:
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(f"SELECT count(*) FROM {table} WHERE command_uuid = ANY(%s)",  # noqa: S608 - our names
                               (uuids,)).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture(scope="module")
def replica_lab(tmp_path_factory: pytest.TempPathFactory, postgres_cluster) -> Iterator[ReplicaLab]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("replica-lab")
    state = root / "state"
    dsn = postgres_cluster.create_nanomdm_database("nanomdm_replicas")
    config_file = root / "werne.toml"
    # The lab's inventory: the demo's devices and the generated serials (written by lab_mdm.up).
    dsn_file = root / "nanomdm.dsn"
    dsn_file.write_text(dsn, encoding="utf-8")
    dsn_file.chmod(0o600)
    config_file.write_text(f'[site]\nstate_dir = "{state}"\ninventory = "{state / "mdm" / "inventory"}"\n'
                           '[mdm]\nquery_deadline_s = 240.0\nblast_radius = 300\n'
                           f'storage_dsn_file = "{dsn_file}"\n', encoding="utf-8")
    g = ReplicaLab(state, config_file, dsn)
    try:
        t0 = time.monotonic()
        lab_mdm.up(state, N_IPADS, g.config(), poll_interval=2.0, storage="pgsql", storage_dsn=dsn, faults=False,
                   replicas=2, bulk_identities=True)
        g.timings["lab up"] = time.monotonic() - t0
        yield g
    finally:
        lab_mdm.down(state)
        print(f"\nreplica lab timings (s): {json.dumps({k: round(v, 1) for k, v in g.timings.items()})}")


def devices(g: ReplicaLab) -> dict[str, str]:
    """serial -> platform of every simulated device (the demo inventory's Apple TVs enrol beside the iPads)."""
    return lab_platforms(g.d)


def enrolled(g: ReplicaLab, want: int, timeout: float) -> int:
    serials = set(devices(g))
    end = time.monotonic() + timeout
    while True:
        n = sum(1 for x in g.json("ipad", "list") if x["serial"] in serials and x["state"] == "enrolled")
        if n >= want or time.monotonic() > end:
            return n
        time.sleep(1)


def not_enrolled(g: ReplicaLab) -> dict[str, Any]:
    """For a failure message: the devices werne does not show enrolled, and whether NanoMDM has them."""
    import psycopg

    rows = {x["serial"]: x["state"] for x in g.json("ipad", "list")}
    missing = {s: rows.get(s, "not listed") for s in devices(g) if rows.get(s) != "enrolled"}
    with psycopg.connect(g.dsn) as conn:
        known = {str(r[0]) for r in conn.execute("SELECT serial_number FROM devices").fetchall()}
    return {s: (state, "in NanoMDM" if s in known else "not in NanoMDM") for s, state in missing.items()}


def detail_of(detail: Any) -> dict[str, Any]:
    """mdm_commands.detail (JSON text on SQLite)."""
    return dict(json.loads(detail) if isinstance(detail, str) else detail or {})


def action_of(detail: Any) -> str:
    """The werne action that sent a command."""
    return str(detail_of(detail).get("action", ""))


def kill(g: ReplicaLab, replica: int) -> None:
    """SIGKILL one NanoMDM replica: no graceful shutdown, requests in flight are cut off."""
    name = lab_mdm.replica_name(replica)
    pid = processes.running(name, g.d)
    assert pid is not None, f"{name} is not running"
    processes.stop(name, g.d, signal_=signal.SIGKILL)
    assert processes.running(name, g.d) is None


def retried_enqueues(g: ReplicaLab) -> set[str]:
    """The enrollment ids of every enqueue nginx's API front answered 502 (werne's client decides
    whether to send those again)."""
    out: set[str] = set()
    for line in (g.d / "logs" / "nginx-access.log").read_text(errors="replace").splitlines():
        m = re.search(r'"PUT /v1/enqueue/([^? ]+)\S* HTTP/[0-9.]+" 502 ', line)
        if m:
            out.update(urllib.parse.unquote(m.group(1)).split(","))
    return out


def werne_while_a_replica_dies(g: ReplicaLab, args: list[str], replica: int, before: int,
                               timeout: float) -> tuple[subprocess.Popen[str], str, str]:
    """`werne ARGS` as its own process; once it has queued a CertificateList (a command row after
    `before`), `replica` is killed with SIGKILL and started again 5 s later. The finished process,
    its stdout and stderr; how many CertificateLists werne had answered at the kill is in g.timings."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from cli import main; sys.exit(main())", "--config", str(g.config_file),
         "--state-dir", str(g.state), *args],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 180
        while time.monotonic() < end and proc.poll() is None and not g.werne_rows(
                "SELECT 1 FROM mdm_commands WHERE request_type = 'CertificateList' AND status = 'queued'"
                " AND id > :before LIMIT 1", {"before": before}):
            time.sleep(0.2)
        assert proc.poll() is None, f"werne {args[0]} ended before its queries were queued"
        kill(g, replica)
        g.timings[f"killed replica {replica} at ({args[0]} answers)"] = len(g.werne_rows(
            "SELECT 1 FROM mdm_commands WHERE status = 'Acknowledged' AND request_type = 'CertificateList'"
            " AND id > :before", {"before": before}))
        time.sleep(5)
        lab_mdm.restart_replica(g.state, replica, g.config(), g.dsn)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc, out, err


def test_a_replica_killed_loses_no_enrolment_and_no_command(replica_lab: ReplicaLab) -> None:
    g = replica_lab
    lab = json.loads((g.d / "lab.json").read_text())
    assert len(lab["replicas"]) == 2 and lab["nanomdm_url"].removeprefix("http://") not in lab["replicas"]
    # The lab's config says so, as a production one would: werne's client waits out a restarting replica.
    assert g.config().mdm.replicas == 2
    everyone = len(devices(g))
    assert everyone >= N_IPADS

    # Replica 2 dies while the iPads enrol; the other takes them, then it comes back.
    t0 = time.monotonic()
    assert enrolled(g, 30, timeout=300) >= 30
    kill(g, 2)
    g.timings["killed replica 2 at (enrolled)"] = enrolled(g, 0, timeout=0)
    time.sleep(5)
    lab_mdm.restart_replica(g.state, 2, g.config(), g.dsn)
    assert enrolled(g, everyone, timeout=420) == everyone, not_enrolled(g)
    g.timings["enrol all"] = time.monotonic() - t0

    # `werne ipad query` for everyone, as its own process; replica 1 dies once the commands are queued.
    # (Commands before it, e.g. the Apple TVs' set-up asking their DeviceInformation, are not its own.)
    before = g.werne_rows("SELECT coalesce(max(id), 0) FROM mdm_commands")[0][0]
    t0 = time.monotonic()
    query, out, err = werne_while_a_replica_dies(g, ["ipad", "query", "--json"], 1, before, 420)
    g.timings["query all"] = time.monotonic() - t0
    assert query.returncode in (0, 1), err[-2000:]
    report = json.loads(out)
    targets = {d["enrollment_id"] for d in report["devices"]}
    assert len(targets) >= N_IPADS

    # werne: one row per (command, device) with its answer; the query's command UUIDs (one per chunk of ids).
    # Only the query's own: an Apple TV set up late (the web server's arrival watcher) asks its
    # DeviceInformation after `before` too, as action "appletv-setup".
    rows = g.werne_rows("SELECT command_uuid, enrollment_id, request_type, status, detail FROM mdm_commands "
                        "WHERE request_type IN ('DeviceInformation', 'SecurityInfo', 'ProfileList', 'CertificateList')"
                        " AND id > :before", {"before": before})
    rows = [r for r in rows if r[1] in targets and action_of(r[4]) == "query"]
    # The query's own commands, and those it asked again (below).
    first = [r for r in rows if "asked_again_for" not in detail_of(r[4])]
    per_device = Counter(r[1] for r in first)
    # iPads answer the four queries; the classroom Apple TVs are asked for their CertificateList only.
    platform = devices(g)
    want = {d["enrollment_id"]: len(QUERY) if platform.get(d["serial"], "iOS") == "iOS" else 1
            for d in report["devices"]}
    assert per_device == Counter(want) and set(per_device) == targets
    assert sum(want.values()) >= len(QUERY) * N_IPADS
    # An answer NanoMDM took while the killed replica still had its event to post is lost to werne:
    # NanoMDM answers the device first and posts the webhook afterwards, best effort (docs/scale.md).
    # Those stay queued in werne; there can be no more of them than the killed replica had requests
    # in flight (nginx's max_conns, and as many posts just begun). The query finds them (the iPad
    # went on: a later answer or Idle poll) and asks each again, once (ipad.dispatch.lost_answers):
    # it ends with every answer, and exit 0.
    lost = {(r[0], r[1]) for r in first if r[3] == "queued"}
    assert {r[3] for r in first} <= {"queued", "Acknowledged"}
    assert len(lost) <= 2 * lab_mdm.REPLICA_MAX_CONNS, lost
    again = {(detail_of(r[4])["asked_again_for"], r[1]): r for r in rows if r not in first}
    assert lost <= set(again), lost - set(again)
    assert {again[k][3] for k in lost} <= {"Acknowledged"}
    # (A query can also be asked again when its answer was merely late by more than the grace: then
    # both answers came, each command once.)
    g.timings["answers lost with the killed replica's webhook posts"] = len(lost)
    g.timings["queries asked again"] = len(again)
    not_ok = [d for d in report["devices"] if not d["ok"]]
    assert query.returncode == 0 and not not_ok and report["not_answered"] == [], (not_ok, err[-2000:])
    assert report["counts"].get("ok") == len(report["devices"])
    uuids = sorted({r[0] for r in rows})

    # NanoMDM: every one of them answered and deleted (the lost ones too); one still queued would be
    # a lost command.
    for table in ("enrollment_queue", "command_results"):
        assert g.nanomdm_count(table, uuids) == 0, table
    # A command two iPads answered at the same moment keeps its row in NanoMDM's commands, with
    # nothing queued (NanoMDM checks for the other's queue entry inside each answer's transaction;
    # ipad.golive.nanomdm_db). The nightly `werne prune` deletes those rows.
    left = g.nanomdm_count("commands", uuids)
    g.timings["NanoMDM command rows two answers at once left"] = left
    assert g.json("prune")["nanomdm_commands"] >= left
    assert g.nanomdm_count("commands", uuids) == 0

    # The webhook brought each answer werne holds once, and none of the lost ones. An enqueue that
    # reached the replica as it was killed gets nginx's 502; werne's client sends it again with the
    # same CommandUUID only while no device has answered it (NanoMDM's delete=1 would have removed
    # it, and it would be queued and run again): no command is answered twice.
    answered = {(r[0], r[1]) for r in rows if r[3] == "Acknowledged"}
    events = Counter((r[0], r[1]) for r in g.werne_rows(
        "SELECT command_uuid, enrollment_id FROM mdm_webhook_events WHERE command_uuid IS NOT NULL"
        " AND status = 'Acknowledged'") if r[0] in set(uuids))
    assert set(events) == answered and set(events.values()) == {1}, events.most_common(3)
    g.timings["devices of an enqueue nginx answered 502"] = len(retried_enqueues(g))
    assert not set(events) & lost

    # The devices: each ran each of its commands, the lost ones included (the simulator writes this
    # when it stops). A device whose report did not reach NanoMDM (its replica killed, or nginx at
    # max_conns answering 502) gets the command again at its next poll and runs it again, as the
    # protocol means it to: the one answer NanoMDM took is what counts above. How often that
    # happened is printed.
    processes.stop("simulator", g.d)
    executed = json.loads((g.d / "executed.json").read_text())
    query_uuids = set(uuids)
    runs = [times for ran in executed.values() for uuid, times in ran.items() if uuid in query_uuids]
    assert len(runs) == len(rows) and min(runs) >= 1
    g.timings["commands run again after a lost report"] = sum(t - 1 for t in runs)

    # Both replicas took answers (NanoMDM logs each report with its status).
    for name in ("nanomdm", "nanomdm-replica2"):
        assert "status=Acknowledged" in (g.d / "logs" / f"{name}.log").read_text(errors="replace"), name


def test_a_replica_killed_during_the_nightly_run_loses_nothing(replica_lab: ReplicaLab) -> None:
    """The nightly run's iPad half (`werne compliance run --ipads`, as the timer runs it) while
    replica 2 is killed once its queries are queued and started again: the run completes, every
    iPad answers (no result "unreachable"), and each of its queries was answered, or lost on its way
    to werne and asked again and answered."""
    g = replica_lab
    everyone = len(devices(g))
    if processes.running("simulator", g.d) is None:  # the test before stopped it for executed.json
        # Started again, the devices check in anew (Authenticate, TokenUpdate), and NanoMDM clears
        # a device's queue at its Authenticate: wait until every one has, before the run queues.
        last = g.werne_rows("SELECT coalesce(max(id), 0) FROM mdm_webhook_events")[0][0]
        lab_mdm.start_simulator(g.state)
        end = time.monotonic() + 300
        while time.monotonic() < end and g.werne_rows(
                "SELECT count(DISTINCT enrollment_id) FROM mdm_webhook_events WHERE topic = 'mdm.TokenUpdate'"
                " AND id > :last", {"last": last})[0][0] < everyone:
            time.sleep(1)
    assert enrolled(g, everyone, timeout=300) == everyone, not_enrolled(g)
    before = g.werne_rows("SELECT coalesce(max(id), 0) FROM mdm_commands")[0][0]
    t0 = time.monotonic()
    run, out, err = werne_while_a_replica_dies(g, ["compliance", "run", "--ipads", "--json"], 2, before, 600)
    g.timings["nightly (iPads) with replica 2 killed"] = time.monotonic() - t0
    assert run.returncode in (0, 1), err[-2000:]  # 1: findings
    summary = json.loads(out)
    assert summary["devices"] >= N_IPADS and summary["run"]
    assert summary["counts"].get("unreachable", 0) == 0, summary["counts"]
    rows = [r for r in g.werne_rows("SELECT command_uuid, enrollment_id, status, detail FROM mdm_commands "
                                    "WHERE id > :before", {"before": before}) if action_of(r[3]) == "query"]
    first = [r for r in rows if "asked_again_for" not in detail_of(r[3])]
    again = {(detail_of(r[3])["asked_again_for"], r[1]): r[2] for r in rows if r not in first}
    lost = {(r[0], r[1]) for r in first if r[2] == "queued"}
    assert len(first) >= 3 * N_IPADS and lost <= set(again) and {again[k] for k in lost} <= {"Acknowledged"}
    g.timings["nightly: answers lost, asked again"] = len(lost)


def test_a_push_certificate_renewal_reaches_every_replica_without_a_restart(replica_lab: ReplicaLab) -> None:
    """NanoMDM keeps an APNs client per topic in each process, but checks the certificate's stale
    token in the shared database before every push: after an upload through the API front (to one
    replica), each replica loads the new certificate at its next push."""
    from mdm_client.factory import nanomdm_client

    g = replica_lab
    cfg = g.config()
    lab = json.loads((g.d / "lab.json").read_text())
    pids = {i: processes.running(lab_mdm.replica_name(i), g.d) for i in (1, 2)}
    front = nanomdm_client(cfg)
    one_device = next(d["enrollment_id"] for d in g.json("ipad", "list") if d.get("enrollment_id"))
    logs = {i: g.d / "logs" / f"{lab_mdm.replica_name(i)}.log" for i in (1, 2)}

    def loads() -> dict[int, int]:
        return {i: log.read_text(errors="replace").count("msg=retrieved push cert") for i, log in logs.items()}

    def push_through_each_replica() -> None:
        for listen in lab["replicas"]:
            front.url = f"http://{listen}"  # straight to this replica, not through nginx
            front.push([one_device])
        front.url = cfg.mdm.url

    push_through_each_replica()  # both hold the current certificate now
    before = loads()
    push_through_each_replica()
    assert loads() == before  # unchanged certificate: no reload
    lab_mdm.install_lab_push_cert(cfg)  # `werne mdm push-cert install`'s code, through the API front
    push_through_each_replica()
    after = loads()
    assert all(after[i] == before[i] + 1 for i in (1, 2)), (before, after)
    # No replica was restarted for it.
    assert {i: processes.running(lab_mdm.replica_name(i), g.d) for i in (1, 2)} == pids
