"""The one way werne runs a playbook: ansible-runner with list and dict arguments, ssh pinned to the
state dir's known_hosts, a scrubbed environment, one event handler and one result type.

This is the only module that imports ansible_runner. Provisioning (`provisioning.runner`), the VPN
operations (`provisioning.vpn.runner`) and the compliance facts (`compliance.collect_laptops`) all
run their playbooks through `run_playbook`; a failed or unreachable host is a result here, not an
exception. Only a run that cannot be prepared raises (AnsibleRunError).
"""

from __future__ import annotations

import difflib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.config import REPO_ROOT, Config, ExecutionNode
from core.secrets import warn_if_others_can_read
from core.text import one_line as _one_line
from provisioning.disk import escrow as disk_escrow
from provisioning.errors import HOST_KEY_CHANGED, HOST_KEY_NOT_PINNED, AnsibleRunError
from provisioning.models import Progress
from provisioning.nodes import node_named, split_hosts, ssh_command, write_job

PLAYBOOK_DIR = REPO_ROOT / "playbooks"
REASON_MAX = 300

HostOutcomeKind = Literal["ok", "changed", "failed", "unreachable"]

# The child's environment is written to the artifacts (artifacts/<id>/command). Only what Ansible
# needs goes in, so secrets held in environment variables (WERNE_*_KEY, tokens) never land there.
_ENV_KEEP = {
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "TZ",
    "TERM",
    "AD_HOC_COMMAND_ID",
    "ORIGINAL_STDOUT_CALLBACK",
    "VIRTUAL_ENV",
}
_ENV_KEEP_PREFIXES = ("ANSIBLE_", "RUNNER_", "AWX_", "LC_")

_STATS_KEYS = ("ok", "changed", "failures", "dark", "skipped", "processed", "ignored", "rescued")


def one_line(text: object) -> str:
    """A reason on one line, cut to REASON_MAX characters (reasons are stored and shown in tables)."""
    return _one_line(text, REASON_MAX)


def scrub_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k in _ENV_KEEP or k.startswith(_ENV_KEEP_PREFIXES)}


def ansible_envvars(config: Config, known_hosts: Path, pipelining: bool | None = None) -> dict[str, str]:
    """Environment for ansible-playbook: pinned host keys, pipelining, key, venv on PATH.

    `known_hosts` is the pinned file (provisioning.preflight.known_hosts_path). Also used by the
    benchmarks so that plain ansible-playbook runs with the same settings. Every Ansible run takes
    the SSH key from here, so here it gets the warning every secret file gets when others can read it.
    """
    warn_if_others_can_read(config.ssh_key_file, "SSH key")
    ssh_args = [
        "-C",
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPersist=60s",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
    ]
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return {
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        # Ansible splits ssh_args with shlex, so a state dir with spaces stays one argument.
        "ANSIBLE_SSH_ARGS": " ".join(shlex.quote(a) for a in ssh_args),
        "ANSIBLE_PIPELINING": str(config.provisioning.pipelining if pipelining is None else pipelining),
        "ANSIBLE_PRIVATE_KEY_FILE": str(config.ssh_key_file),
        "ANSIBLE_REMOTE_USER": config.ssh.user,
        "ANSIBLE_TIMEOUT": str(int(max(1, config.ssh.connect_timeout))),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_ROLES_PATH": str(PLAYBOOK_DIR / "roles"),
        # ansible_runner looks up ansible-playbook on PATH: the venv's bin comes first.
        "PATH": venv_bin + (os.pathsep + path if path else ""),
    }


# ---------------------------------------------------------------- events -> results ------------


def _after_header(d: dict[str, Any]) -> str:
    # The template module names its rendered temp file here; the template's name says more.
    header = str(d.get("after_header") or "after")
    return f"template {Path(header).name}" if "/.ansible/tmp/" in header else header


def render_diff(diff: Any) -> str:
    """Ansible's diff result (one dict or a list of them) as unified-diff text."""
    diffs = diff if isinstance(diff, list) else [diff]
    out: list[str] = []
    for d in diffs:
        if not isinstance(d, dict):
            continue
        if d.get("prepared"):
            out.append(str(d["prepared"]).rstrip("\n"))
        before, after = d.get("before"), d.get("after")
        if isinstance(before, str) and isinstance(after, str):
            out += [
                line.rstrip("\n")
                for line in difflib.unified_diff(
                    before.splitlines(True),
                    after.splitlines(True),
                    fromfile=str(d.get("before_header") or "before"),
                    tofile=_after_header(d),
                )
            ]
        elif isinstance(before, dict) and isinstance(after, dict):
            path = after.get("path") or before.get("path") or ""
            for key in sorted(set(before) | set(after)):
                if key != "path" and before.get(key) != after.get(key):
                    out.append(f"{path}: {key}: {before.get(key)!r} -> {after.get(key)!r}")
    return "\n".join(line for line in out if line)


def failure_message(res: dict[str, Any]) -> str:
    """What a failed task said, with the line of its stderr that names the error."""
    msg = str(res.get("msg") or "")
    for item in res.get("results") or []:
        if isinstance(item, dict) and item.get("failed"):
            msg = str(item.get("msg") or msg)
            break
    lines = [ln.strip() for ln in str(res.get("stderr") or "").splitlines() if ln.strip()]
    if lines:
        # Tools such as nft and sshd -t print the error first and then context (the line, carets).
        detail = next((ln for ln in lines if "error" in ln.lower()), lines[0])
        msg = f"{msg}: {detail}" if msg else detail
    return msg or "failed"


# What ssh says when the pinned key does not match (OpenSSH's warning box, then its verdict), and
# when no key is pinned at all (StrictHostKeyChecking=yes refuses a first contact with the same
# verdict): the second is no sign of interception, only of a host never pinned.
_SSH_KEY_MISMATCH = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed")
_SSH_KEY_UNPINNED = ("host key is known for", "you have requested strict checking")
_SSH_FAILURES = (
    "Connection timed out",
    "No route to host",
    "Connection refused",
    "Permission denied",
    "Could not resolve hostname",
    "Connection reset",
    "Connection closed",
)


def unreachable_reason(msg: str) -> str:
    """One line from Ansible's (long, multi-line) unreachable message."""
    if any(marker in msg for marker in _SSH_KEY_UNPINNED) and "IDENTIFICATION HAS CHANGED" not in msg:
        return f"unreachable: {HOST_KEY_NOT_PINNED}"
    if any(marker in msg for marker in _SSH_KEY_MISMATCH):
        return f"unreachable: {HOST_KEY_CHANGED} (ssh refused the pinned key)"
    for line in msg.splitlines():
        if any(f in line for f in _SSH_FAILURES):
            return one_line(f"unreachable: ssh: {line.strip()}")
    return one_line(f"unreachable: {msg or 'cannot connect'}")


@dataclass
class ChangedTask:
    """A task that changed a host, with its diff as text (empty when the module gives none)."""

    task: str
    role: str | None = None
    diff: str = ""


@dataclass
class HostResult:
    """One host's part of a run: the outcome from the play recap, why it failed, what changed, and
    the results of the tasks the caller asked for (by task name)."""

    host: str
    outcome: HostOutcomeKind = "ok"
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    reason: str | None = None
    changes: list[ChangedTask] = field(default_factory=list)
    # The module result ("res") of each reported task that ran ok on this host, by task name.
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The module result of the event that made this host fail or unreachable.
    failure: dict[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome in ("ok", "changed")

    @property
    def reported(self) -> dict[str, str]:
        """The stdout of each reported task, by task name (e.g. a public key the host printed)."""
        return {task: str(res.get("stdout") or "") for task, res in self.results.items()}


# The live counts of a run are provisioning.models.Progress; RunProgress is the name
# compliance.collect_laptops knows it by.
RunProgress = Progress
ProgressCallback = Callable[[Progress], None]


@dataclass
class AnsibleResult:
    """What one ansible-runner invocation left: its status and rc, whether Ansible got as far as the
    play recap, the artifact dir, and one HostResult per host."""

    status: str
    rc: int | None
    artifact_dir: str
    outcomes: dict[str, HostResult]
    complete: bool = True
    # With execution nodes: each part's own artifact dir ("local" for this machine's part).
    part_artifact_dirs: dict[str, str] = field(default_factory=dict)

    def stdout_tail(self, lines: int = 2) -> str:
        """The last non-empty lines of ansible-playbook's output, on one line ("" if there is none)."""
        try:
            text = Path(self.artifact_dir, "stdout").read_text(errors="replace")
        except OSError:
            return ""
        return one_line(" ".join([ln for ln in text.splitlines() if ln.strip()][-lines:]))


@dataclass
class _HostTrack:
    result: HostResult
    done: bool = False


class EventCollector:
    """Folds ansible-runner events into per-host results and reports live progress.

    `report_tasks` names the tasks whose module result callers need per host; `done_task` is the
    task that marks a host done for progress (a failed or unreachable host is done at once).
    """

    def __init__(
        self,
        hosts: list[str],
        progress: ProgressCallback | None = None,
        report_tasks: frozenset[str] = frozenset(),
        done_task: str | None = None,
        keep_events: bool = True,
    ):
        self.tracks = {h: _HostTrack(HostResult(h)) for h in hosts}
        self.report_tasks = report_tasks
        self.done_task = done_task
        self.keep_events = keep_events
        self.progress_cb = progress
        self.progress = Progress(total=len(hosts))
        self.stats: dict[str, dict[str, int]] | None = None
        self._lock = threading.Lock()

    def _track(self, host: str) -> _HostTrack:
        return self.tracks.setdefault(host, _HostTrack(HostResult(host)))

    def _report(self, host: str | None, task: str | None, event: str | None) -> None:
        tracks = self.tracks.values()
        p = self.progress
        p.done = sum(t.done for t in tracks)
        p.changed = sum(t.result.changed > 0 for t in tracks)
        p.failed = sum(t.result.outcome == "failed" for t in tracks)
        p.unreachable = sum(t.result.outcome == "unreachable" for t in tracks)
        p.host, p.task, p.event = host, task, event
        if self.progress_cb is not None:
            self.progress_cb(p.model_copy())

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        with self._lock:
            if kind == "playbook_on_stats":
                self.stats = {k: dict(data.get(k) or {}) for k in _STATS_KEYS}
                for t in self.tracks.values():
                    t.done = True
                self._report(None, None, None)
                return self.keep_events
            host = data.get("host")
            if not host or kind not in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
                return self.keep_events
            task = str(data.get("task") or "")
            track = self._track(host)
            r = track.result
            res = data.get("res") or {}
            if kind == "runner_on_ok":
                if res.get("changed"):
                    # Counted from the recap at the end; during the run "changed" means "changed once".
                    r.changed = max(r.changed, 1)
                    diff = res.get("diff")
                    if diff is None and res.get("results"):
                        diff = [
                            x.get("diff") for x in res["results"] if isinstance(x, dict) and x.get("changed")
                        ]
                        diff = [d for ds in diff for d in (ds if isinstance(ds, list) else [ds]) if d]
                    r.changes.append(
                        ChangedTask(task=task, role=data.get("role") or None,
                                    diff=render_diff(diff) if diff else "")
                    )
                if task == self.done_task:
                    track.done = True
                if task in self.report_tasks:
                    r.results[task] = res
                self._report(host, task, "ok")
            elif kind == "runner_on_failed":
                if data.get("ignore_errors"):
                    return self.keep_events
                r.outcome, r.failure = "failed", res
                r.reason = one_line(f"task '{task}' failed: {failure_message(res)}")
                track.done = True
                self._report(host, task, "failed")
            else:
                r.outcome, r.failure = "unreachable", res
                r.reason = unreachable_reason(str(res.get("msg") or ""))
                track.done = True
                self._report(host, task, "unreachable")
        return self.keep_events

    def results(self) -> dict[str, HostResult]:
        """Per host: the outcome from the play recap (a host not in it did not run)."""
        stats = self.stats or {}
        out: dict[str, HostResult] = {}
        for host, track in self.tracks.items():
            r = track.result

            def n(key: str, h: str = host) -> int:
                return int((stats.get(key) or {}).get(h, 0))

            r.ok, r.changed, r.failed, r.unreachable = n("ok"), n("changed"), n("failures"), n("dark")
            if r.unreachable:
                r.outcome = "unreachable"
            elif r.failed:
                r.outcome = "failed"
            elif host not in (stats.get("processed") or {}):
                r.outcome = "failed"
                r.reason = r.reason or "Ansible did not run on this host (not in its inventory?)"
            else:
                r.outcome = "changed" if r.changed else "ok"
            if r.outcome not in ("failed", "unreachable"):
                r.reason = None
            out[host] = r
        return out


# ---------------------------------------------------------------- running ansible --------------


@contextmanager
def _cancel_on_signal(enabled: bool) -> Iterator[Callable[[], bool]]:
    """SIGINT/SIGTERM ask ansible-runner to stop the playbook; the old handlers come back after."""
    event = threading.Event()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield event.is_set
        return

    def _handler(_signum: int, _frame: Any) -> None:
        event.set()

    old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event.is_set
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_playbook(
    config: Config,
    playbook: str,
    *,
    inventory: Path,
    hosts: list[str],
    private_data_dir: Path,
    known_hosts: Path,
    forks: int,
    timeout_s: int,
    ident: str | None = None,
    extravars: dict[str, Any] | None = None,
    check_mode: bool = False,
    diff: bool = False,
    tags: list[str] | None = None,
    pipelining: bool | None = None,
    extra_env: dict[str, str] | None = None,
    report_tasks: frozenset[str] = frozenset(),
    done_task: str | None = None,
    progress: ProgressCallback | None = None,
    keep_events: bool = True,
    rotate_artifacts: int = 0,
    cancel_on_signal: bool = False,
    via_nodes: bool = False,
) -> AnsibleResult:
    """Run playbooks/<playbook> on `hosts` (the --limit) and return one HostResult per host.

    ssh is pinned to `known_hosts` with StrictHostKeyChecking=yes; the child's environment keeps
    only what Ansible needs. `keep_events=False` keeps event data (e.g. gathered facts) out of the
    artifacts. With `cancel_on_signal`, SIGINT/SIGTERM stop the run and its status is "canceled".
    With `via_nodes`, the hosts an execution node serves (provisioning.nodes) run on that node, the
    parts at the same time, and their results come back merged into one result.
    A run that stops before the play recap comes back with `complete=False`; the caller decides
    what that means. Raises AnsibleRunError only when the run cannot be prepared.
    """
    path = PLAYBOOK_DIR / playbook
    if not path.is_file():
        raise AnsibleRunError(f"playbook {path} does not exist")
    try:
        private_data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AnsibleRunError(f"cannot create {private_data_dir}: {e.strerror}") from None
    job = PlaybookJob(
        playbook=path,
        inventory=inventory,
        private_data_dir=private_data_dir,
        known_hosts=known_hosts,
        forks=forks,
        timeout_s=timeout_s,
        ident=ident,
        extravars=dict(extravars or {}),
        options=(["--check"] if check_mode else []) + (["--diff"] if diff else []),
        tags=tags,
        envvars={**ansible_envvars(config, known_hosts, pipelining), **(extra_env or {})},
        rotate_artifacts=rotate_artifacts,
    )
    parts: dict[str | None, list[str]] = split_hosts(config, inventory, hosts) if via_nodes else {None: list(hosts)}
    fan_in = _ProgressFanIn(progress, parts)
    with _cancel_on_signal(cancel_on_signal) as cancelled:
        if list(parts) == [None]:
            collector = EventCollector(hosts, progress, report_tasks, done_task, keep_events)
            return _run_local(job, collector, cancelled)
        collectors = {name: EventCollector(part, fan_in.part(name), report_tasks, done_task, keep_events)
                      for name, part in parts.items()}
        with ThreadPoolExecutor(max_workers=len(parts)) as pool:
            futures = {
                name: pool.submit(_run_local, job, collectors[name], cancelled) if name is None
                else pool.submit(run_on_node, config, node_named(config, name), job, parts[name],
                                 collectors[name], cancelled)
                for name in parts
            }
            results = {name: f.result() for name, f in futures.items()}
    return _merge(results, private_data_dir)


@dataclass
class PlaybookJob:
    """One run's settings, the same for every part (this machine's and each node's)."""

    playbook: Path
    inventory: Path
    private_data_dir: Path
    known_hosts: Path
    forks: int
    timeout_s: int
    ident: str | None
    extravars: dict[str, Any]
    options: list[str]
    tags: list[str] | None
    envvars: dict[str, str]
    rotate_artifacts: int = 0


def _run_local(job: PlaybookJob, collector: EventCollector, cancelled: Callable[[], bool]) -> AnsibleResult:
    """The run of `collector`'s hosts on this machine."""
    # Lazy: ansible-runner brings ~150 modules (75 ms); the compliance reports and `werne vpn status`
    # import this module for its helpers and run no playbook.
    from ansible_runner import Runner, RunnerConfig

    hosts = list(collector.tracks)
    rc_config = RunnerConfig(
        private_data_dir=str(job.private_data_dir),
        project_dir=str(PLAYBOOK_DIR),
        playbook=job.playbook.name,
        inventory=str(job.inventory),
        limit=",".join(hosts),
        forks=job.forks,
        envvars=dict(job.envvars),
        extravars=dict(job.extravars),
        tags=",".join(job.tags) if job.tags else None,
        # Fixed option words, nothing from the user in them (RunnerConfig only takes a string here).
        cmdline=" ".join(job.options) or None,
        ident=job.ident,
        quiet=True,
        timeout=job.timeout_s,
        rotate_artifacts=job.rotate_artifacts,
        suppress_env_files=True,
    )
    try:
        rc_config.prepare()
    except Exception as e:  # ansible_runner raises ConfigurationError and plain OSErrors here
        raise AnsibleRunError(f"cannot prepare the Ansible run: {e}") from None
    rc_config.env = scrub_env(rc_config.env)
    runner = Runner(rc_config, event_handler=collector, cancel_callback=cancelled)
    runner.run()
    return AnsibleResult(
        status=runner.status,
        rc=runner.rc,
        artifact_dir=str(rc_config.artifact_dir),
        outcomes=collector.results(),
        complete=collector.stats is not None,
    )


# ---------------------------------------------------------------- execution nodes -------------

# What a node's part may set in the environment; the node sets ssh's settings, key and PATH itself.
_NODE_ENV = ("ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_PIPELINING", "ANSIBLE_REMOTE_USER", "ANSIBLE_TIMEOUT",
             "ANSIBLE_RETRY_FILES_ENABLED", "ANSIBLE_NOCOLOR")
REFUSED_PREFIX = "refused by execution node"


class _ProgressFanIn:
    """One progress stream from several parts: the counts summed over each part's latest."""

    def __init__(self, progress: ProgressCallback | None, parts: dict[str | None, list[str]]):
        self.progress = progress
        # Every part counts from the start (its hosts in the total), not from its first event.
        self.latest: dict[str | None, Progress] = {name: Progress(total=len(hs)) for name, hs in parts.items()}
        self.lock = threading.Lock()

    def part(self, name: str | None) -> ProgressCallback | None:
        if self.progress is None:
            return None
        cb = self.progress

        def report(p: Progress) -> None:
            with self.lock:
                self.latest[name] = p
                parts = self.latest.values()
                cb(p.model_copy(update={k: sum(getattr(x, k) for x in parts)
                                        for k in ("total", "done", "changed", "failed", "unreachable")}))

        return report


def _node_down(node: ExecutionNode, hosts: list[str], why: str, refused: bool = False) -> dict[str, HostResult]:
    reason = one_line(why if refused else f"unreachable: execution node {node.name} ({node.address}): {why}")
    return {h: HostResult(h, outcome="failed" if refused else "unreachable", failed=int(refused),
                          unreachable=int(not refused), reason=reason, failure={"msg": reason}) for h in hosts}


def run_on_node(
    config: Config,
    node: ExecutionNode,
    job: PlaybookJob,
    hosts: list[str],
    collector: EventCollector,
    cancelled: Callable[[], bool],
    command: list[str] | None = None,
) -> AnsibleResult:
    """`hosts`' part of the run on `node`: `ansible-runner transmit` of a job folder (the playbooks,
    an inventory of these hosts, their pinned keys) into ssh to the node's worker, whose stream
    `ansible-runner process` takes back into `collector` and <job>/artifacts/<ident>/.

    A node that cannot be reached makes its hosts unreachable, naming it; a node that refuses the
    job makes them failed with its one-line reason. `command` replaces the ssh command line (the
    tests run the node's worker program directly)."""
    from ansible_runner import interface

    base = job.private_data_dir / "nodes"
    job_dir = base / node.name
    inventory = write_job(job_dir, job.inventory, hosts, job.known_hosts, PLAYBOOK_DIR)
    extravars, job_key = disk_escrow.rewrap_for_node(config, dict(job.extravars), hosts)
    job_key_file = job_dir / disk_escrow.NODE_JOB_KEY_FILE
    stream = base / f"{node.name}.transmit"
    try:
        if job_key is not None:
            with open(os.open(job_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(job_key)
        # 0600: while the job runs, its stream holds the one-job key with its ciphertexts.
        with open(os.open(stream, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            interface.run(
                streamer="transmit", _output=out, private_data_dir=str(job_dir), playbook=job.playbook.name,
                inventory=str(inventory), limit=",".join(hosts), forks=job.forks,
                envvars={k: v for k, v in job.envvars.items() if k in _NODE_ENV}, extravars=extravars,
                tags=",".join(job.tags) if job.tags else None, cmdline=" ".join(job.options) or None,
                ident=job.ident, timeout=job.timeout_s, quiet=True, suppress_env_files=True,
            )
    finally:
        # The run's folder keeps no key: the ciphertexts in it open with nothing left on this machine.
        job_key_file.unlink(missing_ok=True)
    argv = command or ssh_command(config, node, base / f"{node.name}.known_hosts")
    status: dict[str, Any] = {}

    def on_status(data: dict[str, Any], runner_config: Any = None) -> None:
        status.update(data)

    with open(stream, "rb") as stdin, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=err,
                                    env=scrub_env(dict(os.environ)), start_new_session=True)
        except OSError as e:
            return AnsibleResult("failed", None, str(job_dir), _node_down(node, hosts, e.strerror or str(e)))
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.2):
                if cancelled() and proc.poll() is None:
                    proc.terminate()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            interface.run(streamer="process", _input=proc.stdout, private_data_dir=str(job_dir), ident=job.ident,
                          event_handler=collector, status_handler=on_status, cancel_callback=cancelled, quiet=True)
            rc = proc.wait()
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            stream.unlink(missing_ok=True)
        err.seek(0)
        ssh_err = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
    artifact_dir = str(job_dir / "artifacts" / str(job.ident)) if job.ident else str(job_dir / "artifacts")
    explanation = str(status.get("job_explanation") or "")
    if cancelled():
        return AnsibleResult("canceled", rc, artifact_dir, collector.results(), collector.stats is not None)
    if explanation.startswith(REFUSED_PREFIX):
        return AnsibleResult("failed", rc, artifact_dir, _node_down(node, hosts, explanation, refused=True))
    if collector.stats is None:
        why = ssh_err[-1] if ssh_err else explanation or f"its worker stopped (exit {rc})"
        return AnsibleResult("failed", rc, artifact_dir, _node_down(node, hosts, why))
    outcomes = collector.results()
    for r in outcomes.values():
        if r.outcome == "unreachable" and r.reason:
            r.reason = one_line(f"{r.reason} (via execution node {node.name})")
    state = str(status.get("status") or "failed")
    return AnsibleResult(state, 0 if state == "successful" else 2, artifact_dir, outcomes, True)


def _merge(results: dict[str | None, AnsibleResult], private_data_dir: Path) -> AnsibleResult:
    """The parts' results as one: every host's outcome, the worst status, the run's folder."""
    statuses = [r.status for r in results.values()]
    status = next((s for s in ("canceled", "timeout", "failed", "error") if s in statuses), "successful")
    outcomes = {h: r for part in results.values() for h, r in part.outcomes.items()}
    rcs = [r.rc for r in results.values() if r.rc is not None]
    return AnsibleResult(
        status=status,
        rc=max(rcs) if rcs else None,
        artifact_dir=str(private_data_dir),
        outcomes=outcomes,
        complete=all(r.complete for r in results.values()),
        part_artifact_dirs={name or "local": r.artifact_dir for name, r in results.items()},
    )
