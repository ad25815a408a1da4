#!/usr/bin/python3
"""Ansible module: the escrowed LUKS recovery key on a laptop: test unlock, and add its keyslot.

For each LUKS volume (the `devices` given, else crypttab's sources and what lsblk sees as
crypto_LUKS) it runs `cryptsetup open --test-passphrase` with the recovery key on stdin (no
mapping, no mount). Where the key does not open the volume and the installer's enrolment key file
is there, it adds the recovery key with `cryptsetup luksAddKey` (enrolment key from its file, the
new key on stdin) and tests again; once every volume opens with the recovery key, the enrolment
key's slot is removed and its file overwritten and deleted (a key file left beside the volume would
be one more way in). Keys never go on argv; `recovery_key` is no_log. A laptop without any LUKS
volume is a result (luks: false), not a failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: werne_luks
short_description: Test-unlock LUKS volumes with the escrowed recovery key and add its keyslot
options:
  recovery_key:
    description: The recovery key (decrypted on the controller by the werne_escrow lookup).
    type: str
    required: true
    no_log: true
  devices:
    description: LUKS volumes (block devices or files); empty means crypttab and lsblk's.
    type: list
    elements: str
    default: []
  keyslot:
    description: The keyslot the key was added to, if known (a faster test).
    type: int
  enrol_key_file:
    description: The installer's enrolment key, used once to add the recovery key.
    type: path
    default: /etc/werne/luks-enrol.key
  remove_enrol_key:
    description: Remove the enrolment key's slot and file once the recovery key opens every volume.
    type: bool
    default: true
"""

SLOT_RE = re.compile(r"Key slot (\d+) unlocked")


def cryptsetup(argv, key=None, timeout=120):
    try:
        p = subprocess.run(["cryptsetup", *argv], input=key.encode() if key is not None else None,
                           capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, "", f"{e.__class__.__name__}"
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def find_devices():
    found = []
    try:
        with open("/etc/crypttab", encoding="utf-8") as f:
            for ln in f:
                parts = ln.split()
                if parts and not parts[0].startswith("#") and len(parts) > 1:
                    src = parts[1]
                    if src.startswith("UUID="):
                        src = "/dev/disk/by-uuid/" + src[5:]
                    found.append(src)
    except OSError:
        pass
    try:
        out = subprocess.run(["lsblk", "-J", "-p", "-o", "NAME,FSTYPE"], capture_output=True, text=True,
                             timeout=20, check=False).stdout

        def walk(nodes):
            for n in nodes or []:
                if n.get("fstype") == "crypto_LUKS":
                    found.append(n.get("name"))
                walk(n.get("children"))

        walk(json.loads(out or "{}").get("blockdevices"))
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    seen, out_list = set(), []
    for d in found:
        real = os.path.realpath(d)
        if real not in seen:
            seen.add(real)
            out_list.append(d)
    return out_list


def is_luks(dev):
    return os.path.exists(dev) and cryptsetup(["isLuks", dev])[0] == 0


def test_unlock(dev, key, slot=None):
    """The slot the key opens on `dev`, or None."""
    argv = ["open", "--test-passphrase", "--verbose", "--key-file", "-", dev]
    if slot is not None:
        rc, out, _ = cryptsetup([*argv[:-1], "--key-slot", str(slot), dev], key)
        if rc == 0:
            m = SLOT_RE.search(out)
            return int(m.group(1)) if m else slot
    rc, out, _ = cryptsetup(argv, key)
    if rc != 0:
        return None
    m = SLOT_RE.search(out)
    return int(m.group(1)) if m else -1


def add_key(dev, enrol_file, key):
    # The new key comes from stdin ("-"), the existing one from the enrolment key file. A random key
    # of ~159 bits needs no slow PBKDF; pbkdf2 keeps test unlocks fast on every run.
    return cryptsetup(["luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "100000",
                       "--key-file", enrol_file, dev, "-"], key)


def shred(path):
    try:
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.write(os.urandom(max(size, 64)))
            f.flush()
            os.fsync(f.fileno())
        os.unlink(path)
        return True
    except OSError:
        return False


def main():
    module = AnsibleModule(
        argument_spec={
            "recovery_key": {"type": "str", "required": True, "no_log": True},
            "devices": {"type": "list", "elements": "str", "default": []},
            "keyslot": {"type": "int"},
            "enrol_key_file": {"type": "path", "default": "/etc/werne/luks-enrol.key"},
            "remove_enrol_key": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    key = p["recovery_key"]
    devices = [d for d in (p["devices"] or find_devices()) if is_luks(d)]
    if not devices:
        module.exit_json(changed=False, luks=False, verified=False, added=False, devices=[],
                         detail="no LUKS volume on this laptop")
    enrol = p["enrol_key_file"]
    have_enrol = os.path.isfile(enrol)
    results, changed = [], False
    for dev in devices:
        slot = test_unlock(dev, key, p["keyslot"])
        r = {"device": dev, "verified": slot is not None, "keyslot": slot, "added": False, "detail": ""}
        if slot is None and have_enrol:
            if module.check_mode:
                r["detail"] = "would add the recovery key with the enrolment key"
                changed = True
            else:
                rc, _, err = add_key(dev, enrol, key)
                if rc != 0:
                    r["detail"] = f"luksAddKey failed (exit {rc}): {err.strip()[-200:]}"
                else:
                    slot = test_unlock(dev, key)
                    r.update(verified=slot is not None, keyslot=slot, added=True)
                    changed = True
                    if slot is None:
                        r["detail"] = "added, but the test unlock still fails"
        elif slot is None:
            r["detail"] = (f"the escrowed recovery key does not open {dev} (its keyslot was removed, or the "
                           f"volume was made anew), and there is no enrolment key ({enrol}) to add it")
        results.append(r)
    verified = all(r["verified"] for r in results)
    removed = []
    if verified and have_enrol and p["remove_enrol_key"] and not module.check_mode:
        for dev in devices:
            rc, _, _ = cryptsetup(["luksRemoveKey", "--batch-mode", "--key-file", enrol, dev])
            if rc == 0:
                removed.append(dev)
        if shred(enrol):
            changed = True
    detail = "; ".join(f"{r['device']}: {r['detail']}" for r in results if r["detail"])
    module.exit_json(changed=changed, luks=True, verified=verified, added=any(r["added"] for r in results),
                     devices=results, enrol_key_removed_from=removed, detail=detail)


if __name__ == "__main__":
    main()
