"""tvOS updates of the classroom Apple TVs: ScheduleOSUpdate (InstallASAP, ProductVersion).

The iPads' path, a declarative software-update enforcement with a deadline (ipad.ddm.update), does
not exist on tvOS: Apple's schema has com.apple.configuration.softwareupdate.enforcement.specific for
iOS, macOS and visionOS only. An Apple TV has no user who could lose work, so it installs at once;
the nightly rule tv-os-version names those still below compliance.min_tvos.
"""

from __future__ import annotations

import re

from ipad import commands
from ipad.dispatch import (
    APPLETV_GROUP,
    ActionReport,
    IPadContext,
    Job,
    audited,
    check_blast_radius,
    select_targets,
    send_and_wait,
)
from ipad.errors import CommandError

VERSION_RE = re.compile(r"^\d{2}(\.\d{1,2}){0,2}$")


def update_appletvs(ctx: IPadContext, version: str, school: str | None = None, serials: tuple[str, ...] = (),
                    max_devices: int | None = None, deadline_s: float | None = None) -> ActionReport:
    """Ask the Apple TVs (of one school, by serial, or all) to install tvOS `version` now; audited."""
    if not VERSION_RE.match(version):
        raise CommandError(f"bad tvOS version '{version[:20]}' (e.g. 18.2)")
    targets = select_targets(ctx, school, serials, kind=APPLETV_GROUP)
    check_blast_radius(ctx, sum(1 for t in targets if t.enrollment_id), max_devices, "appletv update")
    deadline = 30.0 if deadline_s is None else deadline_s
    job = Job(commands.schedule_os_update("InstallASAP", product_version=version), targets, f"tvOS {version}",
              {"version": version})
    return audited(ctx, "appletv-update", targets, lambda: send_and_wait(ctx, "appletv-update", [job], targets,
                                                                         deadline), {"version": version})
