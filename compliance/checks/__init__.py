"""The named Python checks a baseline rule calls (`check: {python: NAME, params: {...}}`), one
module per subject. Each module registers its checks with compliance.checks.registry's
`python_check`; this package imports every one of them, so `PYTHON_CHECKS` is complete for whoever
imports it (the engine and the baseline loader).
"""

from __future__ import annotations

from compliance.checks import (
    appletv,
    apps,
    disk,
    evidence,
    ipad_mdm,
    ipad_status,
    laptop_hardening,
    patch_level,
    vpn,
    vulns,
)
from compliance.checks.registry import PYTHON_CHECKS, Outcome, PythonCheck, python_check

# Every module of checks; tests/compliance/test_compliance_checks.py holds this against the package's files.
CHECK_MODULES = (appletv, apps, disk, evidence, ipad_mdm, ipad_status, laptop_hardening, patch_level, vpn, vulns)

__all__ = ["CHECK_MODULES", "PYTHON_CHECKS", "Outcome", "PythonCheck", "python_check"]
