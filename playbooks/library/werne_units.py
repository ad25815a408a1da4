#!/usr/bin/python3
"""Ansible module: systemd units enabled and running, in one task (one module call per host).

Reloads systemd when a unit file changed on disk, enables and starts what is not, in the order
given, and restarts a running unit that started before the newest of `inputs` (the files the units
read: their unit files, environment files, binaries, the config) was written. Deciding by the
files' times rather than by a handler means a run stopped after a change but before the restart
still restarts the unit next time. Reports changed only when it did something.
"""

from __future__ import annotations

import os
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: werne_units
short_description: Enable and start (or restart) several systemd units in one task
options:
  units:
    description: Unit names, in start order.
    type: list
    elements: str
    required: true
  inputs:
    description: Files the units read; a running unit older than the newest of them is restarted.
    type: list
    elements: path
    default: []
"""


def main() -> None:
    module = AnsibleModule(argument_spec={"units": {"type": "list", "elements": "str", "required": True},
                                          "inputs": {"type": "list", "elements": "path", "default": []}},
                           supports_check_mode=True)
    units, done = module.params["units"], []

    def systemctl(*args: str, check: bool = True) -> str:
        rc, out, err = module.run_command(["systemctl", *args])
        if check and rc != 0:
            module.fail_json(msg=f"systemctl {' '.join(args)}: {(err or out).strip().splitlines()[-1:]}")
        return out.strip()

    newest = max((os.stat(p).st_mtime for p in module.params["inputs"] if os.path.exists(p)), default=0.0)

    def started_before_newest(unit: str) -> bool:
        # ActiveEnterTimestampMonotonic is in microseconds of CLOCK_MONOTONIC; turned into wall time here.
        mono = systemctl("show", "-p", "ActiveEnterTimestampMonotonic", "--value", unit, check=False)
        if not mono.isdigit() or int(mono) == 0:
            return False
        started = time.time() - (time.clock_gettime(time.CLOCK_MONOTONIC) - int(mono) / 1e6)
        return started < newest

    stale = [u for u in units if systemctl("show", "-p", "NeedDaemonReload", "--value", u, check=False) == "yes"]
    if stale and not module.check_mode:
        systemctl("daemon-reload")
    if stale:
        done.append("daemon-reload")
    for unit in units:
        enabled = systemctl("is-enabled", unit, check=False) == "enabled"
        active = systemctl("is-active", unit, check=False) == "active"
        restart = active and not unit.endswith(".timer") and started_before_newest(unit)
        if module.check_mode:
            done += [f"enable {unit}"] * (not enabled) + [f"start {unit}"] * (not active or restart)
            continue
        if not enabled:
            systemctl("enable", unit)
            done.append(f"enable {unit}")
        if restart:
            systemctl("restart", unit)
            done.append(f"restart {unit}")
        elif not active:
            systemctl("start", unit)
            done.append(f"start {unit}")
    module.exit_json(changed=bool(done), done=done)


if __name__ == "__main__":
    main()
