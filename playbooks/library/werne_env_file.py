#!/usr/bin/python3
"""Ansible module: systemd environment files (root, 0600) whose values come from secret files.

`variables` maps each variable to a file on the host whose content (stripped) becomes its value,
or to a literal with `value:`. A file is rewritten only when its content would change. Values
are never returned, logged or put in a diff. One task for all the files.
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: werne_env_file
short_description: Write 0600 environment files from secret files on the host
options:
  files:
    description: >-
      A list of {path, variables}; variables is a list of {name, file} (the value is the file's
      content) or {name, value}.
    type: list
    elements: dict
    required: true
"""


def main() -> None:
    module = AnsibleModule(argument_spec={"files": {"type": "list", "elements": "dict", "required": True}},
                           supports_check_mode=True)
    changed = [str(f["path"]) for f in module.params["files"] if write(module, str(f["path"]), f["variables"])]
    module.exit_json(changed=bool(changed), changed_paths=changed)


def plain(value: str) -> bool:
    """Whether systemd's EnvironmentFile= reads `value` back as it is: printable, no syntax."""
    return value.isprintable() and not any(c in value for c in "\"'\\$`")


def write(module: AnsibleModule, path: str, variables: list[dict[str, object]]) -> bool:
    lines = ["# Written by `werne server install`: secrets for one service (root only).\n"]
    for var in variables:
        name = str(var["name"])
        if "file" in var:
            try:
                with open(str(var["file"]), encoding="utf-8") as fh:
                    value = fh.read().strip()
            except OSError as e:
                module.fail_json(msg=f"{var['file']}: cannot read it for {name} ({e.strerror})")
        else:
            value = str(var["value"])
        if not plain(value):
            # systemd would read a quote, a backslash or a '$' as syntax, and a line feed starts a
            # line of its own (a variable the config never named): refused, the value never shown.
            module.fail_json(msg=f"{name}: the value from {var.get('file', 'value')} is not one plain line "
                                 "(no quotes, backslashes, '$' or control characters)")
        lines.append(f"{name}={value}\n")
    text = "".join(lines)
    try:
        with open(path, encoding="utf-8") as fh:
            current = fh.read()
        st = os.stat(path)
        same = current == text and (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o600)
    except OSError:
        same = False
    if not same and not module.check_mode:
        tmp = f"{path}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chown(tmp, 0, 0)
        os.replace(tmp, path)
    return not same


if __name__ == "__main__":
    main()
