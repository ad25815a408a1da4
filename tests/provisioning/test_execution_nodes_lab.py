"""Execution nodes in the lab: two nodes (lab hosts lap05, lap06 made nodes by lab.nodes, with
ansible-core and ansible-runner from this venv and the worker as their SSH forced command), each
serving two laptops (node-a: lap01, lap02; node-b: lap03, lap04). This machine's own packets to the
four laptops are dropped (an nftables output rule), so the controller reaches them only through
their node, over ssh to the node's pinned host key.

Tests in order: provisioning and the nightly facts collection reach all four through their nodes;
the forced command runs nothing but the worker; a node asked for another network's laptop refuses;
node-b stopped, its laptops are unreachable by node name and node-a's are fine (exit 1).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from compliance.collect_laptops import run_facts_playbook
from core.config import load_config
from core.inventory import load_inventory
from lab.laptops import ssh_banner
from lab.nodes import NODE_USER, block_controller, install_node, unblock_controller
from provisioning import ansible
from provisioning.preflight import known_hosts_path

pytestmark = [pytest.mark.lab, pytest.mark.slow]

LAPTOPS = {"node-a": ["lap01", "lap02"], "node-b": ["lap03", "lap04"]}
NODE_HOSTS = {"node-a": "lap05", "node-b": "lap06"}
DROPIN = "/etc/ssh/sshd_config.d/00-werne-hardening.conf"


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory(6, gateway=False)


@pytest.fixture(scope="module")
def cfg(lab, lab_config, werne_cli) -> Path:
    # The laptops' keys are pinned first (as when they were set up), then only their nodes reach them.
    path = lab_config(lab, extra="\n[ssh]\nconnect_timeout = 3\nconnect_attempts = 2\n")
    r = werne_cli(path, "laptop", "preflight", "--all", "--accept-new")
    assert r.exit_code == 0, r.output
    # The site's inventory: the four laptops (lap05 and lap06 are the nodes, not laptops).
    inv_dir = lab.state_dir / "site-inventory"
    inv_dir.mkdir()
    data = yaml.safe_load((lab.inventory_dir / "hosts.yml").read_text())
    hosts = data["all"]["children"]["laptops"]["hosts"]
    for h in NODE_HOSTS.values():
        hosts.pop(h)
    (inv_dir / "hosts.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    nodes_toml = ""
    for node, host in NODE_HOSTS.items():
        nets = [f"{lab.host(h).address}/32" for h in LAPTOPS[node]]
        install_node(lab, host, node, nets)
        nodes_toml += (f'\n[[execution_nodes]]\nname = "{node}"\naddress = "{lab.host(host).address}"\n'
                       f'user = "{NODE_USER}"\nhost_key = "{lab.host_public_key(host)}"\nnetworks = {nets}\n'
                       .replace("'", '"'))
    path.write_text(path.read_text().replace(f'inventory = "{lab.inventory_dir}"', f'inventory = "{inv_dir}"')
                    + nodes_toml)
    laptops = [lab.host(h).address for hs in LAPTOPS.values() for h in hs]
    block_controller(lab, laptops)
    yield path
    unblock_controller(lab)


def test_the_controller_has_no_way_to_the_laptops_but_their_nodes(lab, cfg):
    for hs in LAPTOPS.values():
        for h in hs:
            assert ssh_banner(lab.host(h).address, timeout=2) is None, h
    for host in NODE_HOSTS.values():
        assert (ssh_banner(lab.host(host).address) or "").startswith("SSH-")


def test_provisioning_reaches_every_laptop_through_its_node(lab, cfg, werne_cli):
    r = werne_cli(cfg, "laptop", "provision", "--all", "--json")
    assert r.exit_code == 0, r.output
    for hs in LAPTOPS.values():
        for h in hs:
            assert "present" in lab.exec(h, ["sh", "-c", f"test -e {DROPIN} && echo present || echo absent"]).stdout
    # Each node's events and artifacts came back into the run's folder, as a local run's do.
    runs = sorted((load_config(cfg).state_dir / "artifacts").iterdir(), key=lambda p: int(p.name))
    for node in LAPTOPS:
        events = list((runs[-1] / "nodes" / node / "artifacts" / runs[-1].name / "job_events").glob("*.json"))
        assert len(events) > 10, node


def test_the_nightly_facts_come_through_the_nodes(lab, cfg, tmp_path):
    config = load_config(cfg)
    inventory = load_inventory(config.inventory_dir)
    facts = run_facts_playbook(config, inventory, list(inventory.laptops), tmp_path / "facts")
    assert {h: s for h, (s, _) in facts.items()} == {h: "ok" for hs in LAPTOPS.values() for h in hs}
    assert all(isinstance(f, dict) and f for _, f in facts.values())


def test_the_forced_command_runs_only_the_worker(lab, cfg):
    config = load_config(cfg)
    node = config.execution_nodes[0]
    from provisioning.nodes import ssh_command

    argv = ssh_command(config, node, config.state_dir / "node-a.known_hosts")
    p = subprocess.run([*argv[:-1], "cat /etc/shadow"], capture_output=True, text=True, timeout=60, input="")
    assert "root:" not in p.stdout
    assert "refused by execution node node-a: the job stream ended early" in p.stderr


def test_a_node_refuses_another_networks_laptop(lab, cfg, tmp_path):
    config = load_config(cfg)
    inventory = load_inventory(config.inventory_dir)
    node_a = next(n for n in config.execution_nodes if n.name == "node-a")
    job = ansible.PlaybookJob(
        playbook=ansible.PLAYBOOK_DIR / "compliance_facts.yml", inventory=inventory.hosts_file,
        private_data_dir=tmp_path / "run", known_hosts=known_hosts_path(config), forks=5, timeout_s=300,
        ident="1", extravars={"werne_admin_user": config.ssh.user}, options=["--check"], tags=None,
        envvars=ansible.ansible_envvars(config, known_hosts_path(config), True))
    collector = ansible.EventCollector(["lap03"])
    result = ansible.run_on_node(config, node_a, job, ["lap03"], collector, lambda: False)
    r = result.outcomes["lap03"]
    assert r.outcome == "failed"
    assert (r.reason or "").startswith(
        f"refused by execution node node-a: host lap03 ({lab.host('lap03').address}) is not in the networks")
    assert collector.stats is None


def test_a_stopped_node_makes_its_laptops_unreachable_by_name(lab, cfg, werne_cli):
    lab.stop_host(NODE_HOSTS["node-b"])
    try:
        r = werne_cli(cfg, "laptop", "provision", "--all", "--json")
    finally:
        lab.start_host(NODE_HOSTS["node-b"])
    assert r.exit_code == 1, r.output
    hosts = {h["host"]: h for h in json.loads(r.stdout)["hosts"]}
    for h in LAPTOPS["node-a"]:
        assert hosts[h]["outcome"] in ("ok", "changed"), hosts[h]
    for h in LAPTOPS["node-b"]:
        assert hosts[h]["outcome"] == "unreachable", hosts[h]
        assert hosts[h]["reason"].startswith(f"unreachable: execution node node-b ({lab.host('lap06').address})")
