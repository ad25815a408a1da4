"""Apple Classroom and lesson mode in the lab, through the real chain: a class of 25 simulated iPads
(and its teacher's) gets its Education configuration, every profile and command schema-valid; a
lesson started for "10:00" for 30 minutes puts the pupils' iPads into single-app mode when werne's
clock says 10:00 and lifts it at "10:30", also when the web server (its lesson loop) was restarted in
between and came back only after the end: it catches up from the database."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.config import Config, load_config
from core.db import Database
from core.inventory import load_inventory
from ipad import commands
from ipad.actions.queries import query
from ipad.classroom.ca import ClassroomCA
from ipad.classroom.classes import classes_of_serial
from ipad.classroom.education import education_profile
from ipad.classroom.lessons import lesson_profile
from ipad.dispatch import IPadContext
from ipad.models import Lesson
from ipad.payloads import mdm_schema
from ipad.store.registry import Registry
from lab import mdm as lab_mdm
from tests.fixtures.mdm_lab import mdm_lab, wait_for

pytestmark = [pytest.mark.mdm, pytest.mark.slow]

SCHOOL = "gs-demo"
TEACHER = "ZDF3DHQD1D"
N_IPADS = 32  # the demo's 12 and 20 generated, which the lab places in gs-demo: 26 there
PREFIX = "de.werne.ipad"


@dataclass
class ClassLab:
    state: Path
    config_file: Path
    clock_file: Path
    db: Database
    pupils: list[str]

    def config(self) -> Config:
        return load_config(self.config_file, state_dir=self.state)

    def ctx(self) -> IPadContext:
        from ipad.classroom.context import classroom_context

        cfg = self.config()
        lab_inv = load_inventory(self.state / "mdm" / "inventory")
        return classroom_context(IPadContext(cfg, self.db, lab_inv, actor="pytest"))

    def cli(self, *args: str) -> Any:
        from click.testing import CliRunner

        from cli import main

        return CliRunner().invoke(main, ["--config", str(self.config_file), "--state-dir", str(self.state), *args])

    def set_clock(self, iso: str) -> None:
        self.clock_file.write_text(iso + "\n", encoding="utf-8")

    def profiles(self, serial: str) -> dict[str, str]:
        dev = Registry(self.db).devices_by_serial()[serial]
        return {p["PayloadIdentifier"]: p["PayloadUUID"] for p in dev.installed_profiles() or []}


@pytest.fixture(scope="module")
def class_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClassLab]:
    root = tmp_path_factory.mktemp("class-lab")
    clock = root / "clock"
    clock.write_text("2026-12-07T09:59:00+01:00\n", encoding="utf-8")
    old = os.environ.get("WERNE_CLOCK_FILE")
    os.environ["WERNE_CLOCK_FILE"] = str(clock)  # the lab's web server (lesson loop) and the CLI read it
    try:
        # Without the Apple TVs: this test is about the iPads.
        with mdm_lab(root, "query_deadline_s = 60.0\nblast_radius = 50\n", N_IPADS, appletvs=False) as lab:
            registry = Registry(lab.db)
            wait_for("the iPads to enrol",
                     lambda: sum(d.state == "enrolled" for d in registry.list_devices()) >= N_IPADS, 240)
            lab_inv = load_inventory(lab.state / "mdm" / "inventory")
            pupils = sorted(s for s, i in lab_inv.ipads.items() if i.school == SCHOOL and s != TEACHER)
            assert len(pupils) == 25
            yield ClassLab(lab.state, lab.config_file, clock, lab.db, pupils)
    finally:
        if old is None:
            os.environ.pop("WERNE_CLOCK_FILE", None)
        else:
            os.environ["WERNE_CLOCK_FILE"] = old


def test_a_class_of_25_gets_its_education_configuration(class_lab: ClassLab, tmp_path: Path) -> None:
    g = class_lab
    rows = [f"7b;Lehrkraft;{TEACHER};Frau M;mmeier"] + [f"7b;Schüler/in;{s};Kind{i:02d};" for i, s in
                                                       enumerate(g.pupils)]
    csv = tmp_path / "klasse-7b.csv"
    csv.write_bytes(("Klasse;Rolle;Seriennummer;Pseudonym;Anmeldename\r\n" + "\r\n".join(rows) + "\r\n")
                    .encode("cp1252"))
    # The lab's inventory holds the generated serials: import against it.
    r = g.cli("--config", str(g.config_file), "class", "list")  # the group loads
    assert r.exit_code == 0, r.output
    from ipad.classroom.classes import import_class_csv

    ctx = g.ctx()
    (cls,) = import_class_csv(g.db, ctx.inventory, SCHOOL, csv.read_bytes(), csv.name, "pytest")
    assert (len(cls.leaders), len(cls.members)) == (1, 25)

    from ipad.actions.configure import configure

    report = configure(g.ctx(), school=SCHOOL, max_devices=26, deadline_s=90)
    assert report.failed == [], [d.summary() for d in report.devices if not d.ok]
    ca = ClassroomCA(g.state / "classroom")
    for serial in [TEACHER, *g.pupils]:
        built = education_profile(serial, classes_of_serial(g.db, serial), ca, "Stadt Werne", PREFIX)
        # What the iPad holds is exactly this profile (its PayloadUUID derives from its content).
        assert g.profiles(serial).get(built.identifier) == built.uuid, serial
        assert mdm_schema.validate_profile(built.to_bytes(), "iOS") == [], serial
        assert mdm_schema.validate_command(commands.install_profile(built.to_bytes()).to_dict(), "iOS") == []
    # The identities chain to werne's CA (the unit test checks each link with openssl as well).
    leaf_issuers = set()
    for serial, role in [(TEACHER, "leader"), *((s, "member") for s in g.pupils)]:
        cert = ca.identity(serial, role).certificate
        issuer = ca.certificate(role)
        issuer.public_key().verify(cert.signature, cert.tbs_certificate_bytes,  # type: ignore[call-arg]
                                   __import__("cryptography.hazmat.primitives.asymmetric.ec", fromlist=["ECDSA"])
                                   .ECDSA(cert.signature_hash_algorithm))
        leaf_issuers.add(cert.issuer)
    assert leaf_issuers == {ca.certificate("leader").subject, ca.certificate("member").subject}


def _lesson_state(g: ClassLab, lesson_id: int) -> str:
    with g.db.session() as s:
        row = s.get(Lesson, lesson_id)
        assert row is not None
        return row.status


def test_a_lesson_from_10_to_10_30_across_a_restart(class_lab: ClassLab) -> None:
    g = class_lab
    if not any(c for c in __import__("ipad.classroom.classes", fromlist=["x"]).list_classes(g.db)):
        pytest.skip("needs the class of the test above")
    g.set_clock("2026-12-07T09:59:00+01:00")
    r = g.cli("class", "lesson", "start", "--school", SCHOOL, "--class", "7b", "--app", "com.apple.Pages",
              "--at", "2026-12-07T10:00", "--minutes", "30", "--json")
    assert r.exit_code == 0, r.output
    lesson_id = int(__import__("json").loads(r.output)["id"])
    time.sleep(6)  # a few rounds of the loop: 09:59, nothing happens yet
    assert _lesson_state(g, lesson_id) == "scheduled"

    g.set_clock("2026-12-07T10:00:00+01:00")
    assert wait_for("the lesson to start", lambda: _lesson_state(g, lesson_id) == "active", 60)
    ident = f"{PREFIX}.lesson"
    want = lesson_profile("single_app", ["com.apple.Pages"], "Stadt Werne", PREFIX)
    assert mdm_schema.validate_profile(want.to_bytes(), "iOS") == []

    def locked(on: bool) -> bool:
        query(g.ctx(), school=SCHOOL, deadline_s=60)
        held = {s: g.profiles(s).get(ident) for s in [TEACHER, *g.pupils]}
        if on:
            return all(held[s] == want.uuid for s in g.pupils) and held[TEACHER] is None
        return all(v is None for v in held.values())

    assert wait_for("single-app mode on the 25 pupils' iPads", lambda: locked(True), 120)

    # werne's web server goes down; it is 10:31 when it comes back: the loop lifts the lesson.
    from lab import processes

    processes.stop("web", g.state / "mdm")
    g.set_clock("2026-12-07T10:31:00+01:00")
    time.sleep(2)
    assert _lesson_state(g, lesson_id) == "active"  # nothing ran while it was down
    lab_mdm.restart_web(g.state, g.config())
    assert wait_for("the lesson to end", lambda: _lesson_state(g, lesson_id) == "ended", 60)
    assert wait_for("single-app mode lifted", lambda: locked(False), 120)
    with g.db.session() as s:
        row = s.scalar(select(Lesson).where(Lesson.id == lesson_id))
        assert row is not None and sorted(row.serials) == g.pupils
    audit = __import__("json").loads(g.cli("audit", "--json").output)
    actions = [e["action"] for e in audit]
    for a in ("classroom.lesson.start", "classroom.lesson.applied", "classroom.lesson.lifted"):
        assert a in actions, a
