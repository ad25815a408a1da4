"""Execution nodes without the lab: the config, the split of a run's hosts, and the real
transmit -> worker -> process round trip with the node's own program (deploy/node/
werne_node_worker.py, what the node's forced command runs) started here instead of over ssh.

The lab test (test_execution_nodes_lab.py) runs the same over ssh to two nspawn nodes."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from core.config import Config, load_config
from core.errors import ConfigError
from provisioning import ansible, nodes

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxrbGFiLWV4ZWN1dGlvbi1ub2RlLXRlc3Qta2V5AA"


def _node(name: str, networks: list[str], address: str = "127.0.0.1", port: int = 22) -> dict[str, object]:
    return {"name": name, "address": address, "port": port, "host_key": KEY, "networks": networks}


def _config(tmp_path: Path, *node_list: dict[str, object]) -> Config:
    return Config.model_validate({"site": {"state_dir": str(tmp_path / "state")},
                                  "ssh": {"connect_timeout": 2},
                                  "execution_nodes": list(node_list)})


def _hosts_file(tmp_path: Path, hosts: dict[str, tuple[str, int]]) -> Path:
    lines = ["all:", "  vars:", "    ansible_user: admin", "  children:", "    laptops:", "      hosts:"]
    for name, (addr, port) in hosts.items():
        lines += [f"        {name}:", f"          ansible_host: {addr}", f"          ansible_port: {port}"]
    path = tmp_path / "hosts.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _job(cfg: Config, tmp_path: Path, inventory: Path) -> ansible.PlaybookJob:
    return ansible.PlaybookJob(
        playbook=ansible.PLAYBOOK_DIR / "compliance_facts.yml", inventory=inventory,
        private_data_dir=tmp_path / "run", known_hosts=tmp_path / "known_hosts", forks=5, timeout_s=120,
        ident="7", extravars={"werne_admin_user": "admin"}, options=["--check"], tags=None,
        envvars=ansible.ansible_envvars(cfg, tmp_path / "known_hosts", True))


def _worker(tmp_path: Path, networks: list[str]) -> list[str]:
    conf = tmp_path / "node.json"
    conf.write_text(json.dumps({"name": "node-a", "networks": networks, "ssh_key_file": str(tmp_path / "k"),
                                "work_dir": str(tmp_path / "node-work")}), encoding="utf-8")
    return [sys.executable, str(nodes.NODE_WORKER_SOURCE), "--config", str(conf)]


def test_config_nodes_are_checked(tmp_path):
    cfg = _config(tmp_path, _node("node-a", ["10.210.1.0/24"]), _node("node-b", ["10.210.2.7"]))
    assert [n.networks for n in cfg.execution_nodes] == [["10.210.1.0/24"], ["10.210.2.7/32"]]
    bad = [
        (_node("node-a", ["10.210.0.0/16"]), _node("node-b", ["10.210.2.0/24"]), "overlaps"),
        (_node("node-a", ["10.210.1.0/24"]), _node("node-a", ["10.210.2.0/24"]), "configured twice"),
        (_node("node-a", ["not-a-net"]), None, "not a network"),
        ({**_node("node-a", ["10.1.0.0/24"]), "host_key": "AAAA"}, None, "TYPE BASE64"),
    ]
    for first, second, words in bad:
        toml = tmp_path / "werne.toml"
        entries = [first] + ([second] if second else [])
        toml.write_text("".join(
            "[[execution_nodes]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in e.items()) for e in entries))
        with pytest.raises(ConfigError, match=words):
            load_config(toml)


def test_hosts_split_by_the_node_serving_their_address(tmp_path):
    inv = _hosts_file(tmp_path, {"a1": ("10.210.1.11", 22), "b1": ("10.210.2.11", 22), "h1": ("10.200.0.11", 22)})
    cfg = _config(tmp_path, _node("node-a", ["10.210.1.0/24"]), _node("node-b", ["10.210.2.0/24"]))
    assert nodes.split_hosts(cfg, inv, ["h1", "a1", "b1"]) == {None: ["h1"], "node-a": ["a1"], "node-b": ["b1"]}
    # No node configured: every host here, as before.
    assert nodes.split_hosts(_config(tmp_path), inv, ["h1", "a1"]) == {None: ["h1", "a1"]}


def test_round_trip_through_the_nodes_worker_brings_events_and_artifacts_back(tmp_path):
    port = _closed_port()
    inv = _hosts_file(tmp_path, {"a1": ("127.0.0.1", port)})
    cfg = _config(tmp_path, _node("node-a", ["127.0.0.0/8"]))
    seen: list[str] = []
    collector = ansible.EventCollector(["a1"], lambda p: seen.append(str(p.event)))
    result = ansible.run_on_node(cfg, cfg.execution_nodes[0], _job(cfg, tmp_path, inv), ["a1"], collector,
                                 lambda: False, command=_worker(tmp_path, ["127.0.0.0/8"]))
    r = result.outcomes["a1"]
    # The node's Ansible tried the laptop (nothing listens there) and the event came back here.
    assert r.outcome == "unreachable", r.reason
    assert "Connection refused" in (r.reason or "") and "(via execution node node-a)" in (r.reason or "")
    assert "unreachable" in seen
    events = list(Path(result.artifact_dir, "job_events").glob("*.json"))
    assert any(json.loads(e.read_text()).get("event") == "runner_on_unreachable" for e in events)
    assert Path(result.artifact_dir, "status").read_text().strip() == "failed"
    assert not list((tmp_path / "node-work").iterdir())  # the node keeps no job behind


def test_the_node_refuses_a_host_outside_its_networks(tmp_path):
    inv = _hosts_file(tmp_path, {"b1": ("127.0.0.1", 22)})
    # The controller believes node-a serves 127/8; the node itself serves only 10.99.0.0/24.
    cfg = _config(tmp_path, _node("node-a", ["127.0.0.0/8"]))
    collector = ansible.EventCollector(["b1"])
    result = ansible.run_on_node(cfg, cfg.execution_nodes[0], _job(cfg, tmp_path, inv), ["b1"], collector,
                                 lambda: False, command=_worker(tmp_path, ["10.99.0.0/24"]))
    r = result.outcomes["b1"]
    assert r.outcome == "failed"
    assert r.reason == ("refused by execution node node-a: host b1 (127.0.0.1) is not in the networks this "
                        "node serves (10.99.0.0/24)")
    assert collector.stats is None  # nothing ran


def test_a_node_that_is_down_makes_its_hosts_unreachable_by_name(tmp_path):
    local_port = _closed_port()
    inv = _hosts_file(tmp_path, {"a1": ("10.210.1.11", 22), "a2": ("10.210.1.12", 22),
                                 "h1": ("127.0.0.1", local_port)})
    cfg = _config(tmp_path, _node("node-a", ["10.210.1.0/24"], port=_closed_port()))
    result = ansible.run_playbook(cfg, "compliance_facts.yml", inventory=inv, hosts=["a1", "h1", "a2"],
                                  private_data_dir=tmp_path / "run", known_hosts=tmp_path / "known_hosts",
                                  forks=5, timeout_s=60, check_mode=True, via_nodes=True)
    assert result.complete
    # The rest of the run went on: h1 ran here (and found nothing listening), its own reason.
    h1 = result.outcomes["h1"]
    assert h1.outcome == "unreachable" and f"127.0.0.1 port {local_port}: Connection refused" in (h1.reason or "")
    assert "execution node" not in (h1.reason or "")
    assert set(result.part_artifact_dirs) == {"local", "node-a"}
    for h in ("a1", "a2"):
        r = result.outcomes[h]
        assert r.outcome == "unreachable"
        assert (r.reason or "").startswith("unreachable: execution node node-a (127.0.0.1): ssh: connect to host")
        assert "Connection refused" in (r.reason or "")
