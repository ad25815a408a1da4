"""Results of pre-flight and provisioning: data the CLI renders as a table or JSON, never printed here."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from core.findings import Findings

CheckState = Literal["ok", "failed", "not checked"]
# "queued": a home-office laptop that was off; the run waits for it (provisioning.home.pending).
Outcome = Literal["ok", "changed", "failed", "unreachable", "queued"]

# The order in which pre-flight checks a host; a failed step leaves the later ones "not checked".
CHECKS = ("reachable", "host_key", "login", "sudo", "os", "python3", "disk")


def _nothing_checked() -> dict[str, CheckState]:
    return {check: "not checked" for check in CHECKS}


class HostCheck(BaseModel):
    """Pre-flight result for one laptop: each check's state, and one line saying why it failed."""

    host: str
    address: str
    port: int = 22
    checks: dict[str, CheckState] = Field(default_factory=_nothing_checked)
    reason: str | None = None
    host_key_fingerprint: str | None = None
    host_key_recorded: bool = False
    os: str | None = None
    free_disk_mb: int | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    def fail(self, check: str, reason: str) -> HostCheck:
        """Mark `check` failed with `reason` (the first failure is the one reported)."""
        self.checks[check] = "failed"
        self.reason = reason if self.reason is None else f"{self.reason}; {reason}"
        return self


class PreflightReport(Findings, BaseModel):
    """Pre-flight results for every selected laptop, in inventory order."""

    hosts: list[HostCheck]
    known_hosts: str

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)

    @property
    def failed(self) -> list[HostCheck]:
        return [h for h in self.hosts if not h.ok]


class TaskChange(BaseModel):
    """One task that changed (or, in check mode, would change) a laptop, with its diff if any."""

    task: str
    role: str | None = None
    diff: str = ""


class HostOutcome(BaseModel):
    """What provisioning did to one laptop."""

    host: str
    outcome: Outcome
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    reason: str | None = None
    changes: list[TaskChange] = Field(default_factory=list)


class ProvisioningReport(Findings, BaseModel):
    """A whole provisioning run: stored in the state database as ProvisioningRun."""

    run_id: int
    status: Literal["ok", "failed"]
    check_mode: bool
    artifact_dir: str
    interrupted_runs: list[int] = Field(default_factory=list)
    hosts: list[HostOutcome]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Progress(BaseModel):
    """Live counts during a run, passed to the caller's progress callback after every host event."""

    total: int
    done: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    host: str | None = None
    task: str | None = None
    # The event just seen for `host`: "ok", "failed" or "unreachable" (None for the play recap).
    event: str | None = None
