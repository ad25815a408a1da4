#!/usr/bin/python3
"""Ansible module: neutralise settings in foreign sshd drop-ins that contradict werne's hardening.

sshd keeps the FIRST value it reads for a keyword, and `Include /etc/ssh/sshd_config.d/*.conf`
reads the drop-ins in lexical order, so a foreign file that sorts before ours (a local admin's
`00-local.conf`, an installer's file) wins over the hardening. This module finds every global
line of a foreign drop-in that sets a keyword werne manages to another value, comments it out
with a marker (or moves the whole file aside), checks the result with `sshd -t` and undoes its
changes if sshd would refuse the configuration. Works in check mode (reports, changes nothing).
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: werne_sshd_dropin_conflicts
short_description: Neutralise foreign sshd drop-in lines that contradict the werne hardening
options:
  managed_config:
    description: The text of werne's own drop-in; its keyword/value lines are the managed settings.
    type: str
    required: true
  own_dropin:
    description: Path of werne's own drop-in (never touched).
    type: path
    required: true
  exclude:
    description: Further paths never treated as foreign (e.g. werne's old drop-in names, removed separately).
    type: list
    elements: path
    default: []
  dropin_dir:
    description: The directory sshd_config includes.
    type: path
    default: /etc/ssh/sshd_config.d
  pattern:
    description: The glob of the Include line (files sshd really reads).
    type: str
    default: "*.conf"
  action:
    description: >-
      comment: comment out only the conflicting lines, with the marker;
      disable: move the whole file aside to <name>.disabled-by-werne (symlinks are always moved aside).
    type: str
    choices: [comment, disable]
    default: comment
  marker:
    description: Text put in front of every commented-out line.
    type: str
    default: "# disabled by werne ssh_hardening:"
  sshd:
    description: The sshd binary used to validate the complete configuration (sshd -t) after a change.
    type: path
    default: /usr/sbin/sshd
"""

RETURN = r"""
files:
  description: One entry per foreign drop-in changed (or, in check mode, to change).
  type: list
  elements: dict
  sample: [{path: /etc/ssh/sshd_config.d/00-local.conf, action: comment, moved_to: null,
            conflicts: [{line: 2, text: PasswordAuthentication yes, keyword: passwordauthentication,
                         value: "yes", ours: "no"}]}]
"""

DISABLED_SUFFIX = ".disabled-by-werne"
# Old spellings sshd still accepts for a keyword werne writes under its current name.
ALIASES = {
    "challengeresponseauthentication": "kbdinteractiveauthentication",
    "skeyauthentication": "kbdinteractiveauthentication",
    "dsaauthentication": "pubkeyauthentication",
}
# Values that are names (paths, group names): compared case-sensitively; the rest are not.
CASE_SENSITIVE = {"banner", "allowgroups", "allowusers", "denygroups", "denyusers", "authorizedkeysfile"}
_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)(?:\s*=\s*|\s+)(.*?)\s*$")


def canonical(keyword):
    k = keyword.lower()
    return ALIASES.get(k, k)


def normalise(keyword, value):
    # sshd splits arguments on whitespace and drops double quotes around them.
    words = [w.strip('"') for w in value.split()]
    text = " ".join(words)
    return text if keyword in CASE_SENSITIVE else text.lower()


def parse_settings(text):
    """Keyword (canonical, lower case) -> value of the global lines of a config, first value wins."""
    settings = {}
    for kw, value, _line in global_lines(text):
        settings.setdefault(kw, value)
    return settings


def global_lines(text):
    """(canonical keyword, value, 0-based line index) of each line that applies to every connection.

    A `Match` line starts a conditional block that runs to the end of the file (or the next
    Match); `Match all` returns to settings that apply to everyone. Lines inside a conditional
    block are left alone: they are deliberate exceptions, and `sshd -T` does not show them."""
    conditional = False
    for i, raw in enumerate(text.splitlines()):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _LINE.match(raw)
        if not m:
            continue
        kw, value = canonical(m.group(1)), m.group(2)
        if kw == "match":
            conditional = value.strip().lower() != "all"
            continue
        if not conditional:
            yield kw, value, i


def find_conflicts(text, managed):
    """Lines of a foreign drop-in that set a managed keyword to another value than werne's."""
    out = []
    lines = text.splitlines()
    for kw, value, i in global_lines(text):
        ours = managed.get(kw)
        if ours is not None and normalise(kw, value) != normalise(kw, ours):
            out.append({"index": i, "keyword": kw, "value": value, "ours": ours, "text": lines[i].strip()})
    return out


def comment_out(text, conflicts, marker):
    lines = text.splitlines(True)
    for c in conflicts:
        line = lines[c["index"]]
        body = line.rstrip("\r\n")
        lines[c["index"]] = f"{marker} {body.strip()}{line[len(body):] or ''}"
    return "".join(lines)


def aside_name(path):
    target = path + DISABLED_SUFFIX
    n = 1
    while os.path.lexists(target):
        target = f"{path}{DISABLED_SUFFIX}.{n}"
        n += 1
    return target


def write_atomic(module, path, text):
    fd, tmp = tempfile.mkstemp(prefix=".werne-", suffix=".tmp", dir=os.path.dirname(path))
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(text)
    # atomic_move keeps the owner, mode and SELinux context of the file it replaces.
    module.atomic_move(tmp, path)


def main():
    module = AnsibleModule(
        argument_spec={
            "managed_config": {"type": "str", "required": True},
            "own_dropin": {"type": "path", "required": True},
            "exclude": {"type": "list", "elements": "path", "default": []},
            "dropin_dir": {"type": "path", "default": "/etc/ssh/sshd_config.d"},
            "pattern": {"type": "str", "default": "*.conf"},
            "action": {"type": "str", "choices": ["comment", "disable"], "default": "comment"},
            "marker": {"type": "str", "default": "# disabled by werne ssh_hardening:"},
            "sshd": {"type": "path", "default": "/usr/sbin/sshd"},
        },
        supports_check_mode=True,
    )
    p = module.params
    managed = parse_settings(p["managed_config"])
    skip = {os.path.realpath(x) for x in [p["own_dropin"], *p["exclude"]]}
    planned = []
    for path in sorted(glob.glob(os.path.join(p["dropin_dir"], p["pattern"]))):
        if os.path.realpath(path) in skip or not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as e:
            module.fail_json(msg=f"cannot read {path}: {e}")
        conflicts = find_conflicts(text, managed)
        if not conflicts:
            continue
        # Editing through a symlink would change a file outside the drop-in directory.
        action = "disable" if os.path.islink(path) else p["action"]
        planned.append({
            "path": path,
            "action": action,
            "text": text,
            "new_text": comment_out(text, conflicts, p["marker"]) if action == "comment" else None,
            "moved_to": aside_name(path) if action == "disable" else None,
            "conflicts": conflicts,
        })

    files = [
        {
            "path": x["path"],
            "action": x["action"],
            "moved_to": x["moved_to"],
            "conflicts": [
                {"line": c["index"] + 1, "text": c["text"], "keyword": c["keyword"], "value": c["value"],
                 "ours": c["ours"]}
                for c in x["conflicts"]
            ],
        }
        for x in planned
    ]
    diff = []
    for x in planned:
        sets = ", ".join(f"{c['text']} (werne: {c['ours']})" for c in x["conflicts"])
        if x["action"] == "comment":
            diff.append({"before_header": x["path"], "after_header": x["path"],
                         "before": x["text"], "after": x["new_text"]})
        else:
            diff.append({"prepared": f"move {x['path']} aside to {x['moved_to']}: it sets {sets}"})
    verb = "would neutralise" if module.check_mode else "neutralised"
    msg = "; ".join(
        f"{verb} {x['path']} ({'moved aside' if x['action'] == 'disable' else 'commented out'}: "
        + ", ".join(c["text"] for c in x["conflicts"]) + ")"
        for x in planned
    ) or "no foreign sshd drop-in contradicts the hardening"
    result = {"changed": bool(planned), "files": files, "msg": msg, "diff": diff}
    if not planned or module.check_mode:
        module.exit_json(**result)

    done = []
    try:
        for x in planned:
            if x["action"] == "comment":
                write_atomic(module, x["path"], x["new_text"])
            else:
                os.rename(x["path"], x["moved_to"])
            done.append(x)
        check = subprocess.run([p["sshd"], "-t"], capture_output=True, text=True, timeout=30, check=False)
        error = None if check.returncode == 0 else (check.stderr or check.stdout).strip()[-400:]
    except (OSError, subprocess.TimeoutExpired) as e:
        error = f"{e.__class__.__name__}: {e}"
    if error is None:
        module.exit_json(**result)
    # Leave the laptop as it was: a config sshd refuses would keep it from starting next boot.
    for x in reversed(done):
        if x["action"] == "comment":
            write_atomic(module, x["path"], x["text"])
        else:
            os.rename(x["moved_to"], x["path"])
    module.fail_json(msg=f"sshd -t refused the configuration after neutralising; changes undone: {error}",
                     files=files)


if __name__ == "__main__":
    main()
