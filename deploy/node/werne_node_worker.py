#!/usr/bin/env python3
"""werne-node-worker: the forced command of an execution node's SSH account.

The controller (provisioning.nodes) sends an ansible-runner transmit stream on stdin; this program
reads it, checks that the job is one this node may run, and hands it to ansible-runner's own
Worker, whose stream (events, status, artifacts) goes back on stdout to the controller's
`ansible-runner process`. It needs only the standard library and ansible-runner (with ansible-core
in the same venv): it is copied onto the node, werne itself is not installed there.

The node decides what it runs, not the controller: a job is refused (one status line
`{"status": "error", "job_explanation": "refused by execution node NAME: ..."}`, then eof) when
  - a host of its inventory (as `ansible-inventory --list` resolves it) has an address outside the
    networks in the node's config, or a connection other than ssh, or the limit names a host that
    is not in the inventory;
  - it asks for anything but a playbook of its project folder (no module, no process isolation,
    no command line beyond --check/--diff), or sets ansible_* variables as extra vars.
How the node reaches its laptops is the node's too: its own key file, the pinned host keys the
controller shipped in the job (strict checking), its own venv on PATH. A job with LUKS recovery
keys carries them encrypted under a key made for that job alone (`recovery.key` in the job folder,
provisioning.disk.escrow.rewrap_for_node): the role's lookup decrypts them with that file, whatever
path the controller names, and it goes with the job folder when the job ends.

Config, JSON (path as the only argument after --config): {"name": "node-a", "networks":
["10.210.1.0/24"], "ssh_key_file": "/etc/werne-node/laptop_key", "work_dir": "/var/lib/werne-node"}
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ansible_runner.streaming import Worker
from ansible_runner.utils.streaming import unstream_dir

# The kwargs of a job this node accepts (what provisioning.ansible sends); anything else is refused.
ALLOWED_KWARGS = {"playbook", "inventory", "limit", "forks", "envvars", "extravars", "tags", "cmdline",
                  "ident", "timeout", "quiet", "suppress_env_files", "rotate_artifacts"}
ALLOWED_OPTIONS = {"--check", "--diff"}
# Environment variables the controller may set; the node sets the ssh ones itself.
ALLOWED_ENV = {"ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_PIPELINING", "ANSIBLE_REMOTE_USER", "ANSIBLE_TIMEOUT",
               "ANSIBLE_RETRY_FILES_ENABLED", "ANSIBLE_NOCOLOR"}
MAX_JOB_BYTES = 64 * 1024 * 1024
# The LUKS recovery keys' one-job key in the job folder, and the extra var the role reads it from (the
# names provisioning.disk.escrow gives them: this program runs on the node without werne).
RECOVERY_JOB_KEY, RECOVERY_KEY_FILE_VAR = "recovery.key", "werne_recovery_key_file"
# Host variables that would change how ssh checks host keys or which program runs: the node's own.
NODE_OWNS = {"ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args", "ansible_ssh_executable",
             "ansible_ssh_private_key_file", "ansible_private_key_file"}


class Refused(Exception):
    """The job is not one this node runs; the message says why."""


def load_config(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["networks"] = [ipaddress.ip_network(n, strict=False) for n in cfg["networks"]]
    return cfg


def read_job(stream: io.BufferedIOBase, pdd: str) -> dict[str, Any]:
    """The job's kwargs; its private data dir unpacked into `pdd`."""
    kwargs: dict[str, Any] | None = None
    total = 0
    while True:
        line = stream.readline(1024 * 1024)
        total += len(line)
        if not line or total > MAX_JOB_BYTES:
            raise Refused("the job stream ended early or is too large")
        try:
            data = json.loads(line)
        except ValueError:
            raise Refused("the job stream is not ansible-runner's transmit format") from None
        if not isinstance(data, dict):
            raise Refused("the job stream is not ansible-runner's transmit format")
        if "kwargs" in data and isinstance(data["kwargs"], dict):
            kwargs = data["kwargs"]
        elif "zipfile" in data and isinstance(data["zipfile"], int) and 0 < data["zipfile"] <= MAX_JOB_BYTES:
            unstream_dir(stream, data["zipfile"], pdd)
        elif "eof" in data:
            break
        else:
            raise Refused("the job stream has a record this node does not know")
    if kwargs is None:
        raise Refused("the job has no arguments")
    return kwargs


def _inside(base: str, rel: object, what: str) -> str:
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        raise Refused(f"the {what} must be a relative path in the job")
    full = os.path.realpath(os.path.join(base, rel))
    if not full.startswith(os.path.realpath(base) + os.sep):
        raise Refused(f"the {what} is outside the job")
    return full


def check_kwargs(kwargs: dict[str, Any], pdd: str) -> None:
    extra = sorted(set(kwargs) - ALLOWED_KWARGS)
    if extra:
        raise Refused(f"the job asks for {', '.join(extra)}, which this node does not run")
    _inside(os.path.join(pdd, "project"), kwargs.get("playbook"), "playbook")
    _inside(pdd, kwargs.get("inventory"), "inventory")
    options = shlex.split(kwargs.get("cmdline") or "")
    if set(options) - ALLOWED_OPTIONS:
        raise Refused("the job's command line may only hold --check and --diff")
    extravars = kwargs.get("extravars") or {}
    if not isinstance(extravars, dict) or any(str(k).startswith("ansible_") for k in extravars):
        raise Refused("the job sets ansible_* variables as extra vars")
    envvars = kwargs.get("envvars") or {}
    if not isinstance(envvars, dict) or set(envvars) - ALLOWED_ENV:
        raise Refused("the job sets environment variables this node sets itself")


def inventory_hosts(inventory: str, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """host -> its variables, as Ansible itself resolves the inventory."""
    exe = shutil.which("ansible-inventory", path=env["PATH"]) or "ansible-inventory"
    out = subprocess.run([exe, "-i", inventory, "--list"], capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    if out.returncode != 0:
        why = [ln.strip() for ln in out.stderr.splitlines() if ln.strip()]
        raise Refused(f"ansible-inventory cannot read the job's inventory: {why[-1][:200] if why else out.returncode}")
    listed = json.loads(out.stdout)
    hostvars = (listed.get("_meta") or {}).get("hostvars") or {}
    hosts: dict[str, dict[str, Any]] = {h: dict(v or {}) for h, v in hostvars.items()}
    for group, body in listed.items():
        if group != "_meta" and isinstance(body, dict):
            for h in body.get("hosts") or []:
                hosts.setdefault(h, {})
    return hosts


def check_hosts(cfg: dict[str, Any], kwargs: dict[str, Any], hosts: dict[str, dict[str, Any]]) -> None:
    nets = ", ".join(str(n) for n in cfg["networks"])
    for host, hv in sorted(hosts.items()):
        if str(hv.get("ansible_connection") or "ssh") not in ("ssh", "smart"):
            raise Refused(f"host {host} is not reached over ssh")
        own = sorted(set(hv) & NODE_OWNS)
        if own:
            raise Refused(f"host {host} sets {', '.join(own)}, which this node sets itself")
        raw = str(hv.get("ansible_host") or host)
        try:
            addr = ipaddress.ip_address(raw)
        except ValueError:
            raise Refused(f"host {host} has no IP address ({raw!r}); this node serves {nets}") from None
        if not any(addr in n for n in cfg["networks"]):
            raise Refused(f"host {host} ({addr}) is not in the networks this node serves ({nets})")
    limit = [h for h in str(kwargs.get("limit") or "").split(",") if h]
    unknown = [h for h in limit if h not in hosts]
    if not limit or unknown:
        raise Refused(f"the limit names hosts not in the job's inventory: {', '.join(unknown) or '(none)'}")


def node_env(cfg: dict[str, Any], pdd: str) -> dict[str, str]:
    """The ssh settings of the node: its own key, the host keys pinned in the job, strict checking."""
    known = os.path.join(pdd, "known_hosts")
    ssh_args = ["-C", "-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
                "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
    return {
        "ANSIBLE_SSH_ARGS": " ".join(shlex.quote(a) for a in ssh_args),
        "ANSIBLE_PRIVATE_KEY_FILE": str(cfg["ssh_key_file"]),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
    }


def refuse(out: io.BufferedIOBase, cfg_name: str, reason: str) -> int:
    msg = " ".join(f"refused by execution node {cfg_name}: {reason}".split())
    out.write(json.dumps({"status": "error", "job_explanation": msg}).encode() + b"\n")
    out.write(json.dumps({"eof": True}).encode() + b"\n")
    out.flush()
    sys.stderr.write(msg + "\n")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="werne-node-worker")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    out = sys.stdout.buffer
    work = Path(cfg.get("work_dir") or tempfile.gettempdir())
    work.mkdir(parents=True, exist_ok=True)
    pdd = tempfile.mkdtemp(prefix="job-", dir=work)
    try:
        try:
            kwargs = read_job(sys.stdin.buffer, pdd)
            check_kwargs(kwargs, pdd)
            env = {**os.environ, **node_env(cfg, pdd)}
            check_hosts(cfg, kwargs, inventory_hosts(os.path.join(pdd, kwargs["inventory"]), env))
        except Refused as e:
            return refuse(out, cfg["name"], str(e))
        kwargs["envvars"] = {**(kwargs.get("envvars") or {}), **node_env(cfg, pdd)}
        # Extra vars win over every inventory variable: the node's key, whatever the job says.
        kwargs["extravars"] = {**(kwargs.get("extravars") or {}), "ansible_ssh_private_key_file": cfg["ssh_key_file"]}
        if RECOVERY_KEY_FILE_VAR in kwargs["extravars"]:
            # The job's own key file, never a path on the node the controller names.
            kwargs["extravars"][RECOVERY_KEY_FILE_VAR] = os.path.join(pdd, RECOVERY_JOB_KEY)
        lines = [json.dumps({"kwargs": kwargs}), json.dumps({"eof": True})]
        stream = io.BytesIO("".join(f"{ln}\n" for ln in lines).encode())
        status, _rc = Worker(_input=stream, _output=out, private_data_dir=pdd).run()
        return 0 if status == "successful" else 1
    finally:
        shutil.rmtree(pdd, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
