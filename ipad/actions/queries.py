"""Asking iPads what they are: `werne ipad query`, and the nightly compliance run's queries.

`werne ipad query` asks DeviceInformation, SecurityInfo, ProfileList and CertificateList (and
ManagedApplicationList with the apps); the answers come back through the webhook into the registry.
Asked for a school or for all (no serials), it also asks the selection's enrolled classroom Apple TVs
for their CertificateList (tvOS has it since 9.0), so their MDM identities are planned for renewal
(`werne mdm renew`) and counted by `mdm scep retire-old` like the iPads'.

The nightly run asks fewer where declarative status already tells. Every enrolled iPad is asked
ProfileList, Restrictions (the effective restrictions, judged setting by setting) and
CertificateList, which declarative management does not report. DeviceInformation and SecurityInfo
go only to iPads without fresh declarative status (before iPadOS 17, never mapped to a set, silent
on the status channel) and to those whose supervision and encryption werne never read: for the
others OS version, build and passcode state come from their status reports (ipad.ddm.status).
"""

from __future__ import annotations

from core.timing import StepTimes, timed
from ipad import commands
from ipad.commands import Command
from ipad.dispatch import ActionReport, IPadContext, Job, audited, select_targets, send_and_wait
from ipad.store.devices import Device

# The nightly queries: asked of every iPad, and asked only where declarative status does not tell.
ALWAYS = ("ProfileList", "Restrictions", "CertificateList")
UNLESS_DDM = ("DeviceInformation", "SecurityInfo")


def query_commands() -> list[Command]:
    """What `werne ipad query` asks each device (4 commands)."""
    return [
        commands.device_information(),
        commands.security_info(),
        commands.profile_list(),
        commands.certificate_list(),
    ]


def query(
    ctx: IPadContext,
    school: str | None = None,
    serials: tuple[str, ...] = (),
    deadline_s: float | None = None,
    with_apps: bool = False,
    with_appletvs: bool = False,
) -> ActionReport:
    """DeviceInformation + SecurityInfo + ProfileList + CertificateList (+ ManagedApplicationList
    `with_apps`, as the nightly compliance run asks); waits, stores, reports. `with_appletvs` (and
    no serials): CertificateList also to the selection's enrolled Apple TVs (module docstring)."""
    targets = select_targets(ctx, school, serials)
    deadline = ctx.config.mdm.query_deadline_s if deadline_s is None else deadline_s
    cmds = query_commands() + ([commands.managed_application_list()] if with_apps else [])
    jobs = [Job(c, targets) for c in cmds]
    tvs = []
    if with_appletvs and not serials:
        tvs = [t for t in select_targets(ctx, school, kind="appletv") if t.enrollment_id is not None]
        if tvs:
            jobs.append(Job(commands.certificate_list(), tvs))
    every = targets + tvs
    return audited(ctx, "query", every, lambda: send_and_wait(ctx, "query", jobs, every, deadline))


def nightly_query(ctx: IPadContext, ddm_serials: set[str], deadline_s: float,
                  times: StepTimes | None = None, by_serial: dict[str, Device] | None = None,
                  with_apps: bool = True) -> ActionReport:
    """Send the nightly queries (see the module docstring); `ddm_serials` skip DeviceInformation and
    SecurityInfo. Waits until every answer is in or the deadline passed; audited like `ipad query`.
    `by_serial`: the registry's devices as the caller just read them. `with_apps`: also
    ManagedApplicationList, which only the app rules read (a site that manages no apps has none)."""
    with timed(times, "mdm.registry"):
        targets = select_targets(ctx, by_serial=by_serial)
    others = [t for t in targets if t.serial not in ddm_serials]
    jobs = [
        Job(commands.device_information(), others),
        Job(commands.security_info(), others),
        Job(commands.profile_list(), targets),
        Job(commands.restrictions(), targets),
        Job(commands.certificate_list(), targets),
    ]
    if with_apps:
        # For the app rules only: an iPad that does not answer it is judged on the rest.
        jobs.append(Job(commands.managed_application_list(), targets))
    return audited(ctx, "query", targets,
                   lambda: send_and_wait(ctx, "query", jobs, targets, deadline_s, times=times),
                   {"nightly": True, "ddm_status": len(ddm_serials)}, times=times)
