"""Observers of the registry: further handlers of the device messages that run after the registry's
own, in the batch's transaction (NanoMDM's service/multi). The registry is given them when it is
built; nothing registers itself globally.

Every registry has the lost-mode locations (ipad.store.locations): where a pupil's iPad is must be
stored only there and forgotten when lost mode ends, whoever builds the registry. Secret answers
(the Activation Lock bypass code) go to an observer that keeps secrets (the escrow of
ipad.actions.activation_lock, where a key is set); without one, `DropSecrets` logs that each was
dropped.
"""

from __future__ import annotations

import logging

from ipad.store.events import ParsedEvent
from ipad.store.messages import Batch, DeviceMessages

log = logging.getLogger("werne.mdm.registry")

# An observer is a DeviceMessages with the methods it needs overridden.
Observer = DeviceMessages


class DropSecrets(DeviceMessages):
    """Where no observer keeps secret answers: each is dropped (never stored), with a warning."""

    def command_and_report_results(self, batch: Batch, e: ParsedEvent) -> None:
        if e.secret is not None and e.command_uuid and e.acknowledged:
            log.warning("%s answer of %s dropped: no escrow key configured (activation_lock.key_file)",
                        e.request_type, e.enrollment_id)
