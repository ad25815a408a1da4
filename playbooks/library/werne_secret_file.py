#!/usr/bin/python3
"""Ansible module: random secrets in files, each made once (keys werne and a service share).

An existing file is never rewritten (the services already hold its secret); only its owner, group
and mode are set. Secrets are never returned, logged or put in a diff. One task for all the files.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: werne_secret_file
short_description: Make files with a random secret once; keep existing ones
options:
  paths:
    description: The secret files.
    type: list
    elements: path
    required: true
  owner:
    description: Its owner.
    type: str
    default: root
  group:
    description: Its group (the service user's, which reads it).
    type: str
    required: true
  mode:
    description: Its mode, as an octal string.
    type: str
    default: "0640"
  nbytes:
    description: Random bytes in the secret (written URL-safe base64).
    type: int
    default: 32
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "paths": {"type": "list", "elements": "path", "required": True},
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str", "required": True},
            "mode": {"type": "str", "default": "0640"},
            "nbytes": {"type": "int", "default": 32},
        },
        supports_check_mode=True,
    )
    p = module.params
    mode = int(p["mode"], 8)
    uid, gid = pwd.getpwnam(p["owner"]).pw_uid, grp.getgrnam(p["group"]).gr_gid
    changed = [path for path in p["paths"] if ensure(module, path, p["nbytes"], uid, gid, mode)]
    module.exit_json(changed=bool(changed), changed_paths=changed)


def ensure(module: AnsibleModule, path: str, nbytes: int, uid: int, gid: int, mode: int) -> bool:
    changed = False
    if not os.path.exists(path):
        changed = True
        if not module.check_mode:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(nbytes) + "\n")
            os.chown(tmp, uid, gid)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
    else:
        st = os.stat(path)
        if (st.st_uid, st.st_gid, st.st_mode & 0o7777) != (uid, gid, mode):
            changed = True
            if not module.check_mode:
                os.chown(path, uid, gid)
                os.chmod(path, mode)
    return changed


if __name__ == "__main__":
    main()
