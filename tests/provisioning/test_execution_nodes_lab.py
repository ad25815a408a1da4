"""Execution nodes in the lab: two nodes (lab hosts lap05, lap06 made nodes by lab.nodes, with
ansible-core and ansible-runner from this venv and the worker as their SSH forced command), each
serving two laptops (node-a: lap01, lap02; node-b: lap03, lap04). Each node's laptops live on a
network of their own behind it (Lab.private_network: a bridge with no address on this machine, the
node's second interface on it), so the controller has no route to them: it reaches only the nodes,
on the lab bridge, over ssh to each node's pinned host key.

Tests in order: the controller has no route to the laptops, and each node reaches only its own;
provisioning and the nightly facts collection reach all four through their nodes (provisioning
also escrows lap01's LUKS recovery key, a LUKS volume in a file, through node-a, which never holds
the escrow key);
the forced command runs nothing but the worker; a node asked for another network's laptop refuses;
node-b stopped, its laptops are unreachable by node name and node-a's are fine (exit 1).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from compliance.collect_laptops import run_facts_playbook
from core.actor import real_user
from core.config import load_config
from core.db import Database
from core.escrow import new_key
from core.inventory import load_inventory
from lab.laptops import ssh_banner
from lab.nodes import NODE_USER, install_node
from provisioning import ansible
from provisioning.disk.escrow import recovery_key_facts, show_recovery_key
from provisioning.known_hosts import host_id
from provisioning.preflight import known_hosts_path

pytestmark = [pytest.mark.lab, pytest.mark.slow]

LAPTOPS = {"node-a": ["lap01", "lap02"], "node-b": ["lap03", "lap04"]}
NODE_HOSTS = {"node-a": "lap05", "node-b": "lap06"}
DROPIN = "/etc/ssh/sshd_config.d/00-werne-hardening.conf"
# A TCP connect to the laptop's sshd, from wherever it runs; prints the banner's first bytes.
SSH_PROBE = "exec 3<>/dev/tcp/{}/22 && head -c 4 <&3"
# lap01's encrypted disk: a LUKS volume in a file with the installer's enrolment key beside it.
DISK, ENROL = "/root/disk.img", "/etc/werne/luks-enrol.key"
FAST = "--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --batch-mode"
MAKE_DISK = (f"mkdir -p /etc/werne && head -c 20M /dev/zero > {DISK} && printf enrolment > {ENROL} "
             f"&& chmod 600 {ENROL} && printf 'user pass' | cryptsetup luksFormat --type luks2 {FAST} "
             f"--key-file - {DISK} && printf 'user pass' | cryptsetup luksAddKey {FAST} --key-file - {DISK} {ENROL}")


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory(6, gateway=False)


@pytest.fixture(scope="module")
def networks(lab) -> dict[str, str]:
    """node -> the private network its laptops were moved onto (10.210.K.0/24)."""
    return {node: lab.private_network(NODE_HOSTS[node], LAPTOPS[node]) for node in LAPTOPS}


@pytest.fixture(scope="module")
def cfg(lab, networks, lab_config) -> Path:
    # The nodes' networks are admin networks of the site: the laptops' firewall lets their node's SSH in.
    admin = ", ".join(f'"{n}"' for n in ["10.200.0.0/16", "10.77.0.0/16", *networks.values()])
    escrow_key = lab.state_dir / "recovery-keys.key"
    escrow_key.write_text(new_key() + "\n")
    escrow_key.chmod(0o600)
    path = lab_config(lab, extra=f"\n[ssh]\nconnect_timeout = 3\nconnect_attempts = 2\n\n"
                                 f"[provisioning]\nadmin_networks = [{admin}]\n\n"
                                 f'[recovery_keys]\nkey_file = "{escrow_key}"\nallowed_users = ["{real_user()}"]\n')
    made = lab.exec("lap01", ["sh", "-c", MAKE_DISK])
    assert made.returncode == 0, made.stderr
    # The laptops' host keys are pinned as when they were set up: the controller cannot reach them
    # to pin them itself (pre-flight skips node-served laptops; their nodes check these keys).
    pins = ""
    for h in [h for hs in LAPTOPS.values() for h in hs]:
        key_type, key = lab.host_public_key(h).split()[:2]
        pins += f"{host_id(lab.host(h).address, 22)} {key_type} {key}\n"
    known_hosts = known_hosts_path(load_config(path))
    known_hosts.write_text(pins, encoding="utf-8")
    known_hosts.chmod(0o600)
    # The site's inventory: the four laptops (lap05 and lap06 are the nodes, not laptops).
    inv_dir = lab.state_dir / "site-inventory"
    inv_dir.mkdir()
    data = yaml.safe_load((lab.inventory_dir / "hosts.yml").read_text())
    hosts = data["all"]["children"]["laptops"]["hosts"]
    for h in NODE_HOSTS.values():
        hosts.pop(h)
    hosts["lap01"]["werne_luks_devices"] = [DISK]
    (inv_dir / "hosts.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    nodes_toml = ""
    for node, host in NODE_HOSTS.items():
        nets = [networks[node]]
        install_node(lab, host, node, nets)
        nodes_toml += (f'\n[[execution_nodes]]\nname = "{node}"\naddress = "{lab.host(host).address}"\n'
                       f'user = "{NODE_USER}"\nhost_key = "{lab.host_public_key(host)}"\nnetworks = {nets}\n'
                       .replace("'", '"'))
    path.write_text(path.read_text().replace(f'inventory = "{lab.inventory_dir}"', f'inventory = "{inv_dir}"')
                    + nodes_toml)
    return path


def _controller_addresses() -> list[ipaddress.IPv4Interface]:
    links = json.loads(subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    return [ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}") for link in links for a in link["addr_info"]]


def test_the_controller_has_no_route_to_the_laptops_and_each_node_reaches_only_its_own(lab, networks):
    labid = lab.network()["labid"]
    controller = lab.network()["host_address"]
    mine = _controller_addresses()
    for node, hs in LAPTOPS.items():
        net = ipaddress.IPv4Network(networks[node])
        # No address of this machine lies in the node's network: it is no link of the controller's.
        assert not [i for i in mine if i.ip in net or i.network.overlaps(net)], (node, mine)
        for h in hs:
            address = lab.host(h).address
            assert ipaddress.IPv4Address(address) in net, h
            # The controller's routing table has no route to the laptop but the machine's default
            # route (out of its uplink, no link of the lab), and no SSH answers there.
            matching = json.loads(subprocess.run(["ip", "-j", "route", "show", "match", address],
                                                 capture_output=True, text=True, check=True).stdout)
            assert {r["dst"] for r in matching} <= {"default"}, (h, matching)
            route = json.loads(subprocess.run(["ip", "-j", "route", "get", address],
                                              capture_output=True, text=True, check=True).stdout)[0]
            assert labid not in route["dev"] and not route["dev"].startswith("vb-"), (h, route)
            assert ssh_banner(address, timeout=2) is None, h
            # Nor has the laptop a way back: its network ends at its node.
            back = lab.exec(h, ["ip", "route", "get", controller])
            assert back.returncode != 0 and "Network is unreachable" in back.stderr, (h, back)
            back = lab.exec(h, ["bash", "-c", SSH_PROBE.format(controller)])
            assert back.returncode != 0 and "Network is unreachable" in back.stderr, (h, back)
            # Its own node reaches it on that network; the other node does not (its only route
            # there is its default one, to the controller, which has none).
            assert lab.exec(NODE_HOSTS[node], ["bash", "-c", SSH_PROBE.format(address)]).stdout == "SSH-", h
            other = next(n for n in NODE_HOSTS if n != node)
            p = lab.exec(NODE_HOSTS[other], ["timeout", "3", "bash", "-c", SSH_PROBE.format(address)])
            assert p.returncode != 0 and p.stdout == "", (h, other, p)
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


def test_a_laptop_behind_a_node_gets_its_recovery_key_escrowed(lab, cfg):
    # (after the provisioning run above) node-a's lookup opened lap01's key with the job's own key.
    config = load_config(cfg)
    db = Database(config.database_url)
    try:
        facts = recovery_key_facts(db, [h for hs in LAPTOPS.values() for h in hs])
        assert (facts["lap01"]["state"], facts["lap01"]["check_result"]) == ("added", "ok"), facts["lap01"]
        assert {facts[h]["check_result"] for h in ("lap02", "lap03", "lap04")} == {"no-luks"}
        key = show_recovery_key(config, db, "lap01", actor=real_user())
    finally:
        db.dispose()
    opened = lab.exec("lap01", ["cryptsetup", "open", "--test-passphrase", "--key-file", "-", DISK], input=key)
    assert opened.returncode == 0, opened.stderr
    assert lab.exec("lap01", ["test", "-e", ENROL]).returncode != 0  # the enrolment key is gone
    # Neither the key nor a key that opens what the run sent is left in the run's folder or on the node.
    run = max((config.state_dir / "artifacts").iterdir(), key=lambda p: int(p.name))
    escrow_key = config.recovery_keys.key_file.read_text().strip()  # type: ignore[union-attr]
    for f in (f for f in run.rglob("*") if f.is_file()):
        text = f.read_bytes()
        assert key.encode() not in text and escrow_key.encode() not in text, f
    assert not list(run.rglob("recovery.key")) and not list(run.rglob("*.transmit"))
    for host in NODE_HOSTS.values():
        left = lab.exec(host, ["find", "/var/lib/werne-node/jobs", "-mindepth", "1"])
        assert left.stdout == "", (host, left.stdout)


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


def test_a_node_refuses_another_networks_laptop(lab, cfg, networks, tmp_path):
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
        f"refused by execution node node-a: host lap03 ({lab.host('lap03').address}) is not in the networks "
        f"this node serves ({networks['node-a']})")
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
