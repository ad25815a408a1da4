"""The compliance package's exceptions, rooted in ComplianceError.

ComplianceError (WerneError)           could not run                          -> exit 3
├── BaselineError (InputError)         a baseline file is invalid             -> exit 2
├── WaiverError (InputError)           the waivers file is invalid            -> exit 2
├── RunNotFoundError (InputError)      a run id names no stored run           -> exit 2
├── ReportFormatError (InputError)     unknown report format or bad output    -> exit 2
├── ComplianceLockHeld (LockHeldError) another compliance run is going on     -> exit 3
├── CollectionError                    no facts could be collected at all     -> exit 3
├── ShardTimeout                       a sharded run's shards did not finish  -> exit 3
├── BSIDataError                       the derived BSI data file is unusable  -> exit 3
└── SigningError (InputError)          the signing key is missing or unusable -> exit 2
"""

from __future__ import annotations

from core.errors import InputError, LockHeldError, WerneError


class ComplianceError(WerneError):
    """Root of every error the compliance package raises."""


class BaselineError(ComplianceError, InputError):
    """A baseline (rules) file does not load or does not validate."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0] if problems else 'baseline is invalid'}{more}")


class WaiverError(ComplianceError, InputError):
    """The waivers file does not load or a waiver is incomplete."""


class RunNotFoundError(ComplianceError, InputError):
    """No stored compliance run has the given id."""


class ReportFormatError(ComplianceError, InputError):
    """The report format is unknown or the output path cannot be written."""


class ComplianceLockHeld(ComplianceError, LockHeldError):
    """Another compliance run holds the lock."""


class CollectionError(ComplianceError):
    """Facts could not be collected from a fleet at all (not a per-device failure)."""


class ShardTimeout(ComplianceError):
    """The shards of a sharded run were not all done within compliance.shard_timeout_s."""


class BSIDataError(ComplianceError):
    """The derived Grundschutz++ data (data/bsi-gspp.json) is missing or contradicts itself."""


class SigningError(ComplianceError, InputError):
    """The signing key (or the key to verify with) is missing, unreadable or of an unusable kind."""
