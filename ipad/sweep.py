"""The nightly run's MDM queries, fewer where declarative status already tells.

Every enrolled iPad is asked ProfileList, Restrictions (the effective restrictions, judged setting by
setting) and CertificateList, which declarative management does not report. DeviceInformation and
SecurityInfo go only to iPads without fresh declarative status (before iPadOS 17, never mapped to a
set, silent on the status channel) and to those whose supervision and encryption werne never read:
for the others OS version, build and passcode state come from their status reports (ipad.ddm_status).
"""

from __future__ import annotations

from ipad import commands
from ipad.ops import ActionReport, IPadContext, _audited, _send_and_wait, _Sent, certificate_list, select_targets

ALWAYS = ("ProfileList", "Restrictions", "CertificateList")
UNLESS_DDM = ("DeviceInformation", "SecurityInfo")


def nightly_query(ctx: IPadContext, ddm_serials: set[str], deadline_s: float) -> ActionReport:
    """Send the nightly queries (see the module docstring); `ddm_serials` skip DeviceInformation and
    SecurityInfo. Waits until every answer is in or the deadline passed; audited like `ipad query`."""
    targets = select_targets(ctx)
    others = [t for t in targets if t.serial not in ddm_serials]
    jobs = [
        _Sent(commands.device_information(), others),
        _Sent(commands.security_info(), others),
        _Sent(commands.profile_list(), targets),
        _Sent(commands.restrictions(), targets),
        _Sent(certificate_list(), targets),
        # For the app rules only: an iPad that does not answer it is judged on the rest.
        _Sent(commands.managed_application_list(), targets),
    ]
    return _audited(ctx, "query", targets, lambda: _send_and_wait(ctx, "query", jobs, targets, deadline_s),
                    {"nightly": True, "ddm_status": len(ddm_serials)})
