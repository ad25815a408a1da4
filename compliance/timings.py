"""Where a compliance run's time goes: the steps of `werne compliance run`, each with its wall and
CPU time, for `werne compliance run --timings`, the stored run (compliance_runs.timings, not in the
record hash), the JSON report and bench/nightly.py.

The laptops and the iPads are collected side by side in two threads, so the steps under each fleet
overlap the other fleet's; every step keeps its start and end (seconds from the run's start) to
show that. Whose CPU a step's CPU time is (`cpu_of`, core.timing):
    thread            the thread that ran the step (time.thread_time)
    thread+children   that, plus the child processes reaped during the step (RUSAGE_CHILDREN
                      deltas): ansible-playbook, its forks and their ssh. The ssh ControlPersist
                      masters detach and are never reaped here, so their CPU is missing.
    threads           the caller's and its worker threads' (the DDM status reads on 8 threads)
    hosts             what werne_facts measured on the laptops themselves (the module and the
                      commands it ran, summed over the laptops; the wall time is the slowest
                      laptop's). Python's start and Ansible's module transfer are not in it.
    (empty)           not measured here: the webhook receiver is its own process, so its step is
                      the span from the sweep's first stored answer to its last (from the stored
                      rows' times); bench/nightly.py reads the receiver's CPU from /proc.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from core.timing import StepTimes, children_cpu_s, process_cpu_s

T = TypeVar("T")

# Every step a run records, in the order the breakdown lists them: (name, label). Indented labels
# are parts of the step above them.
STEPS: tuple[tuple[str, str], ...] = (
    ("setup", "baselines, waivers, sweep set-up"),
    ("laptops", "laptops: collection (their thread)"),
    ("laptops.presence", "  switched-off laptops (presence reads)"),
    ("laptops.playbook", "  facts playbook (ansible-playbook, ssh)"),
    ("laptops.on_hosts", "  werne_facts on the laptops"),
    ("laptops.patch", "  of it: patch-level facts"),
    ("laptops.packages", "  of it: installed packages (dpkg-query)"),
    ("laptops.package_lists", "  package lists stored"),
    ("laptops.vpn_evidence", "  VPN evidence (peer records)"),
    ("laptops.evidence_write", "  evidence writes"),
    ("laptops.evidence_read", "  evidence reads"),
    ("laptops.controller_facts", "  known vulnerabilities, recovery keys"),
    ("ipads", "iPads: collection (their thread)"),
    ("mdm.registry", "  registry reads"),
    ("ddm.status", "  DDM status reads (KMFDDM)"),
    ("mdm.record", "  MDM sweep: commands recorded"),
    ("mdm.enqueue", "  MDM sweep: enqueue (NanoMDM)"),
    ("mdm.push", "  MDM sweep: pushes"),
    ("mdm.wait", "  MDM sweep: waiting for answers"),
    ("mdm.ingest", "  MDM sweep: webhook ingest (first to last answer)"),
    ("mdm.audit", "  MDM sweep: audit record"),
    ("ipads.facts", "  iPad facts from the answers"),
    ("appletvs", "Apple TVs: collection (their thread)"),
    ("fleet_facts", "fleet facts (push certificate, tokens)"),
    ("shards.enqueue", "shards: work rows and jobs (leader)"),
    ("shards.wait", "shards: waiting for the workers (leader)"),
    ("evaluation", "evaluation"),
    ("waivers", "waivers"),
    ("store", "storing and chaining"),
    ("audit", "audit record"),
    ("alerts", "alerts on new findings"),
    ("metrics", "metrics files"),
    ("signing", "signing the chain head"),
    ("report", "report"),
)
LABELS = dict(STEPS)


class RunTimes(StepTimes):
    """The steps of one compliance run, and the process's CPU over the whole run."""

    def __init__(self) -> None:
        super().__init__()
        self._cpu0 = process_cpu_s() + children_cpu_s()

    def timed_call(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) as step `name` (for work handed to a thread)."""
        with self.step(name):
            return fn(*args, **kwargs)

    def finish(self) -> dict[str, Any]:
        """The breakdown: the run's wall time, this process's CPU time (all threads and reaped
        children) and each step, in STEPS order (steps not listed there last)."""
        wall = self.now()
        cpu = process_cpu_s() + children_cpu_s() - self._cpu0
        recorded = {s.name: s for s in self.steps()}
        order = [n for n, _ in STEPS if n in recorded] + sorted(n for n in recorded if n not in LABELS)
        return {
            "wall_s": round(wall, 4),
            "cpu_s": round(cpu, 4),
            "cpu_of": "process+children",
            "steps": [{**recorded[n].to_dict(), "label": LABELS.get(n, n)} for n in order],
        }


def step(timings: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """One step of a stored breakdown, by name (None when the run did not record it)."""
    for s in (timings or {}).get("steps", []):
        if s.get("name") == name:
            return dict(s)
    return None


def _seconds(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"


def table_rows(timings: dict[str, Any]) -> list[list[str]]:
    """The breakdown as text rows (a header first): step, wall s, CPU s, whose CPU, when (from-to
    s after the start), and the step's counts. The last row is the whole run."""
    rows = [["step", "wall s", "CPU s", "CPU of", "when s", "detail"]]
    for s in timings.get("steps", []):
        when = "" if s.get("start_s") is None else f"{s['start_s']:.2f}-{s['end_s']:.2f}"
        detail = ", ".join(f"{k} {v}" for k, v in sorted((s.get("detail") or {}).items()))
        if s.get("count", 1) > 1:
            detail = f"x{s['count']}" + (f", {detail}" if detail else "")
        rows.append([s.get("label") or s["name"], _seconds(s["wall_s"]), _seconds(s.get("cpu_s")),
                     s.get("cpu_of") or "-", when, detail])
    rows.append(["whole run", _seconds(timings.get("wall_s")), _seconds(timings.get("cpu_s")),
                 timings.get("cpu_of") or "-", "", ""])
    return rows
