"""Lab execution nodes: a lab host made into a werne execution node (provisioning.nodes).

`install_node(lab, host, name, networks)` does on a running lab host what an administrator does on
a new node: ansible-core and ansible-runner (with their dependencies, copied from this project's
venv: the node needs no package index, and its ansible-runner speaks the same streaming protocol as
the controller's), the node's program deploy/node/werne_node_worker.py, its config (the networks it
serves, its key to the laptops), and an account `werne-node` whose only authorized key is the
controller's, with a forced command that runs nothing but the worker. Which laptops only that
node reaches is the lab's network (`Lab.private_network(host, laptops)`), not the node's install.
"""

from __future__ import annotations

import base64
import io
import json
import re
import tarfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from lab.errors import LabError
from lab.laptops import Lab

NODE_USER = "werne-node"
NODE_HOME = "/var/lib/werne-node"
NODE_DIR = "/opt/werne-node"
NODE_CONFIG = "/etc/werne-node/node.json"
NODE_KEY = "/etc/werne-node/laptop_key"
FORCED_COMMAND = "/usr/local/bin/werne-node-worker"
WORKER_SOURCE = Path(__file__).resolve().parent.parent / "deploy" / "node" / "werne_node_worker.py"
# The console scripts the node needs (ansible-runner runs ansible-playbook; the worker's check
# runs ansible-inventory), as ansible-core's own entry points.
ENTRY_POINTS = {"ansible-playbook": "ansible.cli.playbook", "ansible-inventory": "ansible.cli.inventory"}

WRAPPER = f"""#!/bin/sh
# werne execution node: the only command the controller's key may run (authorized_keys command=).
export PYTHONPATH={NODE_DIR}/site PATH={NODE_DIR}/bin:/usr/bin:/bin LANG=C.UTF-8
exec /usr/bin/python3 {NODE_DIR}/werne_node_worker.py --config {NODE_CONFIG}
"""


def _requirements(name: str, seen: set[str]) -> None:
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return
    seen.add(key)
    for line in metadata.requires(name) or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            _requirements(req.name, seen)


def bundle() -> bytes:
    """ansible-core, ansible-runner and their dependencies' files from this venv, as a tar.gz."""
    names: set[str] = set()
    for top in ("ansible-core", "ansible-runner"):
        _requirements(top, names)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(names):
            dist = metadata.distribution(name)
            for f in dist.files or []:
                if f.parts[0] in ("..", "bin") or "__pycache__" in f.parts:
                    continue
                src = Path(str(dist.locate_file(f)))
                if src.is_file():
                    tar.add(src, arcname=str(f))
    return buf.getvalue()


def _exec(lab: Lab, host: str, argv: list[str], input: str | None = None, timeout: float = 300) -> str:
    p = lab.exec(host, argv, input=input, timeout=timeout)
    if p.returncode != 0:
        raise LabError(f"execution node {host}: {' '.join(argv)[:80]} failed: {(p.stderr or p.stdout).strip()[-200:]}")
    return p.stdout


def _put(lab: Lab, host: str, path: str, data: bytes, mode: int, owner: str = "root") -> None:
    _exec(lab, host, ["sh", "-c", 'mkdir -p "$(dirname "$0")" && umask 077 && base64 -d > "$0" && chmod "$1" "$0" '
                      '&& chown "$2" "$0"', path, f"{mode:o}", owner],
          input=base64.b64encode(data).decode("ascii"))


def install_node(lab: Lab, host: str, name: str, networks: list[str], payload: bytes | None = None) -> None:
    """Make the running lab host `host` the execution node `name` serving `networks`."""
    _exec(lab, host, ["sh", "-c", f"id {NODE_USER} >/dev/null 2>&1 || useradd --system --home-dir {NODE_HOME} "
                      f"--create-home --shell /bin/sh {NODE_USER}"])
    _put(lab, host, "/tmp/werne-node.tar.gz", payload or bundle(), 0o644)
    _exec(lab, host, ["sh", "-c", f"mkdir -p {NODE_DIR}/site {NODE_DIR}/bin && tar -xzf /tmp/werne-node.tar.gz "
                      f"-C {NODE_DIR}/site && rm /tmp/werne-node.tar.gz"])
    for script, module in ENTRY_POINTS.items():
        _put(lab, host, f"{NODE_DIR}/bin/{script}",
             f"#!/usr/bin/python3\nimport sys\nfrom {module} import main\nsys.exit(main())\n".encode(), 0o755)
    _put(lab, host, f"{NODE_DIR}/werne_node_worker.py", WORKER_SOURCE.read_bytes(), 0o644)
    _put(lab, host, FORCED_COMMAND, WRAPPER.encode(), 0o755)
    config = {"name": name, "networks": networks, "ssh_key_file": NODE_KEY, "work_dir": f"{NODE_HOME}/jobs"}
    _put(lab, host, NODE_CONFIG, json.dumps(config).encode(), 0o644)
    # The node's key to its laptops: in the lab the controller's laptop key (authorised on them).
    _put(lab, host, NODE_KEY, lab.key_file.read_bytes(), 0o600, owner=NODE_USER)
    pub = lab.key_file.with_suffix(".pub").read_text(encoding="utf-8").strip()
    _put(lab, host, f"{NODE_HOME}/.ssh/authorized_keys",
         f'command="{FORCED_COMMAND}",restrict {pub}\n'.encode(), 0o600, owner=NODE_USER)
    _exec(lab, host, ["chown", "-R", f"{NODE_USER}:", f"{NODE_HOME}"])
    _exec(lab, host, ["sh", "-c", "command -v ssh >/dev/null || { echo 'no ssh client on the node' >&2; exit 1; }"])
    # The node's Ansible runs as its account, with what the forced command sets.
    _exec(lab, host, ["runuser", "-u", NODE_USER, "--", "env", f"PYTHONPATH={NODE_DIR}/site",
                      f"{NODE_DIR}/bin/ansible-inventory", "--version"])

