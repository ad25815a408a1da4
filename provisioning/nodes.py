"""Execution nodes: which node serves a laptop, the job a node is sent, and how the controller
reaches the node.

A node ([[execution_nodes]] in the config) is a machine near some laptops, the only way to them.
The controller splits a playbook run's hosts by node (a laptop's ansible_host inside a network a
node serves goes to that node; the rest run here, as without nodes) and provisioning.ansible runs
each node's part through ansible-runner's streaming protocol: `transmit` here, `worker` on the
node (deploy/node/werne_node_worker.py, the forced command of the node's SSH account), `process`
here again, so that events and artifacts land where a local run's do.

Mutual authentication: the node's host key is pinned in the config (ssh with strict checking
against a known_hosts file of that one key); the controller's key is authorised on the node with a
forced command that only runs the worker. The node checks the job itself (its own networks), so a
controller that sends it another network's laptop is refused, not obeyed.
"""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path
from typing import Any

import yaml

from core.config import Config, ExecutionNode
from core.yamlio import YAMLInputError, load_file
from provisioning.errors import AnsibleRunError
from provisioning.known_hosts import host_id

# The program the node's authorized_keys entry forces (deploy/node/werne_node_worker.py, installed).
WORKER_COMMAND = "werne-node-worker"
NODE_KEY_VARS = ("ansible_ssh_private_key_file", "ansible_private_key_file")
NODE_WORKER_SOURCE = Path(__file__).resolve().parent.parent / "deploy" / "node" / "werne_node_worker.py"


def _host_vars(hosts_file: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The inventory as data, and host -> its own variables over its group's."""
    try:
        data = load_file(hosts_file)
    except YAMLInputError as e:
        raise AnsibleRunError(f"cannot read the inventory: {e}") from None
    if not isinstance(data, dict):
        raise AnsibleRunError(f"{hosts_file}: not an Ansible YAML inventory")
    out: dict[str, dict[str, Any]] = {}
    children = ((data.get("all") or {}).get("children") or {})
    for group in children.values():
        group = group or {}
        for host, hv in (group.get("hosts") or {}).items():
            out[str(host)] = {**(group.get("vars") or {}), **(hv or {})}
    return data, out


def node_for_address(config: Config, address: str) -> ExecutionNode | None:
    """The node whose networks hold `address` (None: this machine runs it)."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return None
    for node in config.execution_nodes:
        if any(addr in ipaddress.ip_network(n) for n in node.networks):
            return node
    return None


def split_hosts(config: Config, hosts_file: Path, hosts: list[str]) -> dict[str | None, list[str]]:
    """`hosts` by the node that serves them, in their order; None for the ones this machine runs."""
    if not config.execution_nodes:
        return {None: list(hosts)}
    _, hostvars = _host_vars(hosts_file)
    parts: dict[str | None, list[str]] = {}
    for h in hosts:
        node = node_for_address(config, str(hostvars.get(h, {}).get("ansible_host") or h))
        parts.setdefault(node.name if node else None, []).append(h)
    return parts


def node_named(config: Config, name: str) -> ExecutionNode:
    node = next((n for n in config.execution_nodes if n.name == name), None)
    if node is None:
        raise AnsibleRunError(f"no execution node '{name}' in the config")
    return node


def write_job(job_dir: Path, hosts_file: Path, hosts: list[str], known_hosts: Path, playbook_dir: Path) -> Path:
    """A node's job folder in ansible-runner's layout: project/ (the playbooks), inventory/hosts.yml
    (only `hosts`, with their group variables) and known_hosts (their pinned keys). Returns the
    inventory file."""
    data, hostvars = _host_vars(hosts_file)
    keep = set(hosts)
    # The node reaches its laptops with its own key: the controller's key path means nothing there.
    for section in [data["all"].get("vars") or {}, *(
            (g or {}).get("vars") or {} for g in ((data["all"].get("children")) or {}).values())]:
        for var in NODE_KEY_VARS:
            section.pop(var, None)
    children = {}
    for name, group in (((data.get("all") or {}).get("children")) or {}).items():
        group = group or {}
        members = {h: {k: v for k, v in (hv or {}).items() if k not in NODE_KEY_VARS}
                   for h, hv in (group.get("hosts") or {}).items() if h in keep}
        if members:
            children[name] = {**({"vars": group["vars"]} if group.get("vars") else {}), "hosts": members}
    inventory = {"all": {**({"vars": data["all"]["vars"]} if data["all"].get("vars") else {}),
                         "children": children}}
    if job_dir.exists():
        shutil.rmtree(job_dir)
    shutil.copytree(playbook_dir, job_dir / "project")
    inv = job_dir / "inventory" / "hosts.yml"
    inv.parent.mkdir(parents=True)
    inv.write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")
    wanted = {host_id(str(hostvars[h].get("ansible_host") or h), int(hostvars[h].get("ansible_port") or 22))
              for h in hosts if h in hostvars}
    lines = known_hosts.read_text(encoding="utf-8").splitlines() if known_hosts.exists() else []
    pinned = [ln for ln in lines if ln.split(" ", 1)[0] in wanted]
    (job_dir / "known_hosts").write_text("".join(f"{ln}\n" for ln in pinned), encoding="utf-8")
    return inv


def ssh_command(config: Config, node: ExecutionNode, known_hosts_file: Path) -> list[str]:
    """ssh to the node's forced command: its host key pinned (strict), the controller's key, no
    agent, no forwarding. Writes the one-line known_hosts file for the node."""
    known_hosts_file.parent.mkdir(parents=True, exist_ok=True)
    known_hosts_file.write_text(f"{host_id(node.address, node.port)} {node.host_key}\n", encoding="utf-8")
    return [
        "ssh", "-T", "-a", "-x",
        "-i", str(node.key_file or config.ssh_key_file),
        "-p", str(node.port),
        "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={known_hosts_file}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={int(max(1, config.ssh.connect_timeout))}",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=4",
        "-l", node.user,
        node.address,
        WORKER_COMMAND,
    ]
