#!/usr/bin/python3
"""Ansible module: several small text files (units, nginx sites) written in one task.

Each file is rewritten only when its content, owner, group or mode differ; the task reports which
changed. One module call instead of one copy per file: on a busy host each task costs seconds.
Never for secrets: the content travels in the module's arguments.
"""

from __future__ import annotations

import grp
import os
import pwd

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: werne_files
short_description: Write several small text files in one task, each only when it differs
options:
  files:
    description: A list of {dest, content, mode (octal string), owner, group}.
    type: list
    elements: dict
    required: true
"""


def differs(dest: str, text: str, uid: int, gid: int, mode: int) -> bool:
    try:
        with open(dest, encoding="utf-8") as fh:
            if fh.read() != text:
                return True
        st = os.stat(dest)
    except (OSError, UnicodeDecodeError):
        return True
    return (st.st_uid, st.st_gid, st.st_mode & 0o7777) != (uid, gid, mode)


def main() -> None:
    module = AnsibleModule(argument_spec={"files": {"type": "list", "elements": "dict", "required": True}},
                           supports_check_mode=True)
    changed = []
    for f in module.params["files"]:
        dest, text, mode = str(f["dest"]), str(f["content"]), int(str(f.get("mode", "0644")), 8)
        uid = pwd.getpwnam(f.get("owner", "root")).pw_uid
        gid = grp.getgrnam(f.get("group", "root")).gr_gid
        if not differs(dest, text, uid, gid, mode):
            continue
        changed.append(dest)
        if module.check_mode:
            continue
        tmp = f"{dest}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    module.exit_json(changed=bool(changed), written=changed)


if __name__ == "__main__":
    main()
