#!/usr/bin/python3
"""Ansible module: can an account read (or write) these paths? Checked as that account, read-only.

Each path is tried in a child process that has become the account (its uid, gid and groups), so
the answer is the kernel's, ACLs and every parent directory included. The first path it cannot use
fails the task with one line: the setting, the path and what is missing.
"""

from __future__ import annotations

import grp
import os
import pwd

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: werne_access
short_description: Fail unless an account can read (or write) each path
options:
  user:
    description: The account.
    type: str
    required: true
  paths:
    description: A list of {setting, path, write (bool, default false)}.
    type: list
    elements: dict
    required: true
"""


def allowed(user: pwd.struct_passwd, path: str, write: bool) -> bool:
    pid = os.fork()
    if pid == 0:  # the child becomes the account and asks the kernel
        try:
            groups = [g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem]
            os.setgroups([user.pw_gid, *groups])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            ok = os.access(path, os.W_OK if write else os.R_OK)
        except BaseException:
            os._exit(2)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "user": {"type": "str", "required": True},
            "paths": {"type": "list", "elements": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    try:
        user = pwd.getpwnam(module.params["user"])
    except KeyError:
        module.fail_json(msg=f"no account {module.params['user']}")
    for item in module.params["paths"]:
        path, write = str(item["path"]), bool(item.get("write", False))
        what = "write" if write else "read"
        if not os.path.exists(path):
            module.fail_json(msg=f"{item['setting']} {path}: does not exist on the server")
        if not allowed(user, path, write):
            module.fail_json(msg=f"{item['setting']} {path}: the service user {user.pw_name} cannot {what} it")
    module.exit_json(changed=False, checked=len(module.params["paths"]))


if __name__ == "__main__":
    main()
