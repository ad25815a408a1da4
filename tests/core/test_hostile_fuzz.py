"""Issue 11: property-based tests (Hypothesis, derandomized so CI sees the same inputs every time)
of every parser that takes outside input: the inventory loaders, the iPad CSV (inventory and the
web page's upload) and the webhook receiver. Across thousands of generated inputs: no traceback
(only the project's own errors), no 5xx from the receiver, and no row silently dropped from a CSV."""

from __future__ import annotations

import base64
import json
import plistlib
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import requests
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.csvio import decode_csv_bytes
from core.errors import InventoryError
from core.inventory import load_inventory, parse_ipad_rows
from enrolment.requests import parse_uploaded_serials
from ipad.errors import BadEvent
from ipad.webhook import parse_event
from tests.fixtures.site import REPO

DEMO = REPO / "inventories" / "demo"

# Thousands of generated inputs per test take about a minute in all: `make test` runs them,
# `make check` (the fast tier) leaves them out.
pytestmark = pytest.mark.slow


def fuzz(examples: int) -> settings:
    """Derandomized (the same inputs on every run), no example database, no per-example deadline."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------- the iPad CSV --------------

SERIALS = st.from_regex(r"[A-Z0-9]{10,12}", fullmatch=True)
NOISE = st.sampled_from(['"', '""', ";", ",", " ", "\t", "\r", "\n", "\r\n", "x", "ä", "\ufeff", "="])


@st.composite
def ipad_csv(draw) -> bytes:  # type: ignore[no-untyped-def]
    """A mostly valid ipads.csv (so that many inputs pass), with quotes, separators and line ends
    sprinkled in at random places."""
    sep = draw(st.sampled_from([";", ","]))
    rows = [sep.join(["serial", "model", "school", "group", "name"])]
    for _ in range(draw(st.integers(0, 12))):
        school = draw(st.sampled_from(["gs-demo", "gym-demo"]))
        group = draw(st.sampled_from(["pupil", "teacher", "shared"]))
        rows.append(sep.join([draw(SERIALS), "iPad", school, group, draw(st.text("ab-1", max_size=6))]))
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(rows) + draw(st.sampled_from(["", "\n", "\r\n"]))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(NOISE) + text[at:]
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "cp1252"]))
    return text.encode(encoding, errors="replace")


def records_expected(raw: bytes) -> int:
    """Data rows a reader must return: every physical line after the header with a visible cell.
    (A row that a quote joined to another one would make fewer: that is the silent loss.)"""
    text = decode_csv_bytes(raw, "x")
    lines = re.split(r"\r\n|\r|\n", text)[1:]
    return sum(1 for ln in lines if ln.strip(' \t;,"'))


@fuzz(1500)
@given(ipad_csv())
def test_fuzz_inventory_ipad_csv_never_drops_a_row_silently(raw: bytes) -> None:
    problems: list[str] = []
    try:
        expected = records_expected(raw)
    except InventoryError:
        expected = None  # empty or binary: the parser must say so itself
    good = parse_ipad_rows(raw, "ipads.csv", None, problems)
    if not problems:
        assert expected is not None and len(good) == expected, (raw, good)
    assert all(re.match(r"^ipads\.csv(:\d+)?: ", p) for p in problems), problems


@fuzz(800)
@given(ipad_csv())
def test_fuzz_uploaded_csv_never_drops_a_serial_silently(raw: bytes) -> None:
    try:
        expected = records_expected(raw)
    except InventoryError:
        expected = None
    serials, problems = parse_uploaded_serials(raw, "asm.csv", "gs-demo")
    if not problems:
        assert expected is not None and len(serials) == expected, (raw, serials)


@fuzz(1000)
@given(st.binary(max_size=300))
def test_fuzz_ipad_csv_arbitrary_bytes(raw: bytes) -> None:
    problems: list[str] = []
    parse_ipad_rows(raw, "ipads.csv", None, problems)
    parse_uploaded_serials(raw, "asm.csv", "gs-demo")


# ---------------------------------------------------------------- inventory YAML ------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=12),
                    st.sampled_from(["10.200.0.11", "DEMO-NB-0001", "2026-13-45", "0x1F", "~", "yes"]))
VALUES = st.recursive(SCALARS, lambda c: st.one_of(st.lists(c, max_size=3),
                                                   st.dictionaries(st.text(max_size=8), c, max_size=3)),
                      max_leaves=8)
YAML_NOISE = st.sampled_from(["!vault ", "!!python/object:os.system ", "!x ", "&a ", "*a", "? ", "- ", ": ", "\t",
                              "{", "[", "'", '"', "\n  ", "%TAG ! tag:x,2000:\n---\n", "\x07", "!!binary ", "<<: "])


def mutate(draw, text: str) -> str:  # type: ignore[no-untyped-def]
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(YAML_NOISE) + text[at:]
    return text


@st.composite
def hosts_yml(draw) -> str:  # type: ignore[no-untyped-def]
    host = {"ansible_host": draw(st.sampled_from(["10.200.0.11", "lap01.example"])), "owner": draw(SCALARS),
            "vpn_address": draw(st.sampled_from(["10.77.0.11", "nonsense"])), "asset_tag": "DEMO-NB-0001"}
    host.update(draw(st.dictionaries(st.sampled_from(["ansible_port", "x", "owner"]), VALUES, max_size=2)))
    doc = {"all": {"vars": draw(st.dictionaries(st.text(max_size=6), VALUES, max_size=2)),
                   "children": {"laptops": {"hosts": {draw(st.sampled_from(["lap01", "Lap 1", "x"])): host}}}}}
    return mutate(draw, yaml.safe_dump(doc, sort_keys=False))


@st.composite
def schools_yml(draw) -> str:  # type: ignore[no-untyped-def]
    school = {"id": draw(st.sampled_from(["gs-demo", "gym-demo", "X Y"])), "name": draw(SCALARS),
              "department": "d", "support_phone": "+49 1", "support_email": "a@b.invalid"}
    school.update(draw(st.dictionaries(st.sampled_from(["name", "x"]), VALUES, max_size=2)))
    return mutate(draw, yaml.safe_dump({"schools": [school, draw(VALUES)]}, sort_keys=False))


@pytest.fixture(scope="module")
def inv_dir() -> Path:  # type: ignore[misc]
    d = Path(tempfile.mkdtemp(prefix="werne-fuzz-inv-"))
    shutil.copytree(DEMO, d, dirs_exist_ok=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@fuzz(700)
@given(data=st.data())
def test_fuzz_inventory_loaders_raise_only_inventory_errors(inv_dir: Path, data) -> None:  # type: ignore[no-untyped-def]
    which = data.draw(st.sampled_from(["hosts.yml", "schools.yml"]))
    text = data.draw(hosts_yml() if which == "hosts.yml" else schools_yml())
    original = (inv_dir / which).read_bytes()
    (inv_dir / which).write_text(text, encoding="utf-8")
    try:
        load_inventory(inv_dir)
    except InventoryError as e:
        assert e.problems and all(p.startswith(str(inv_dir)) for p in e.problems), e.problems
        assert all("\n" not in p or "broken YAML" in p for p in e.problems), e.problems
    finally:
        (inv_dir / which).write_bytes(original)


# ---------------------------------------------------------------- webhook parser ------------

PLIST_LEAF = st.one_of(st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
                       st.text(st.characters(blacklist_categories=["Cs", "Cc"]), max_size=12), st.binary(max_size=12))
PLIST_KEYS = st.sampled_from(["UDID", "Status", "CommandUUID", "RequestType", "ErrorChain", "ErrorCode", "MessageType",
                              "SerialNumber", "EnrollmentID", "QueryResponses", "Topic", "Token"]) | st.text(max_size=6)
PLISTS = st.recursive(
    PLIST_LEAF, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(PLIST_KEYS, c, max_size=5)), max_leaves=12
)
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(), st.text(max_size=10))
JSONS = st.recursive(
    JSON_LEAF, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=3)),
    max_leaves=8,
)
STATUSES = st.sampled_from(["Acknowledged", "Error", "NotNow", "Idle", "CommandFormatError", "x"])


def b64plist(value: object, fmt: plistlib.PlistFormat) -> str:
    try:
        return base64.b64encode(plistlib.dumps(value, fmt=fmt)).decode()
    except (TypeError, ValueError, OverflowError):
        return base64.b64encode(b"<plist>").decode()


@st.composite
def webhook_bodies(draw) -> bytes:  # type: ignore[no-untyped-def]
    topic = draw(st.sampled_from(["mdm.Connect", "mdm.Authenticate", "mdm.TokenUpdate", "mdm.CheckOut", "x"]))
    kind = draw(st.sampled_from(["acknowledge_event", "checkin_event"]))
    payload = draw(PLISTS)
    if isinstance(payload, dict) and draw(st.booleans()):
        payload.update({"UDID": "U-1", "Status": draw(STATUSES), "MessageType": "Authenticate"})
    fmt = draw(st.sampled_from([plistlib.FMT_XML, plistlib.FMT_BINARY]))
    ev = {"raw_payload": draw(st.one_of(st.just(b64plist(payload, fmt)), st.text(max_size=8), JSONS))}
    for key in ("udid", "ids", "status", "command_uuid", "enrollment_id", "token_update_tally"):
        if draw(st.booleans()):
            ev[key] = draw(JSONS)
    body = {"topic": topic, kind: ev}
    for key in ("event_id", "created_at"):
        if draw(st.booleans()):
            body[key] = draw(JSONS)
    text = json.dumps(body)
    return text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"])), errors="replace")


EDGE_BODIES = [
    b"", b"null", b"[]", b'"x"', b"1e999999", b"\xff\xfe{", b'{"topic": "\\ud800"}',
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,  # JSON nested 50,000 deep
    b"[" * 200_000,
    json.dumps({"topic": "mdm.Connect", "acknowledge_event": {"raw_payload": base64.b64encode(
        b"<plist><dict><key>UDID</key><string>U</string><key>Status</key><string>Acknowledged</string>"
        b"<key>CommandUUID</key><string>c</string><key>X</key>" + b"<array>" * 5000 + b"</array>" * 5000
        + b"</dict></plist>").decode()}}).encode(),
    json.dumps({"topic": "mdm.TokenUpdate", "event_id": "big-tally", "checkin_event": {
        "udid": "U-2", "token_update_tally": 2**80, "raw_payload": b64plist(
            {"MessageType": "TokenUpdate", "UDID": "U-2", "Topic": "t", "Token": b"t", "PushMagic": "m"},
            plistlib.FMT_XML)}}).encode(),
]


@fuzz(1000)
@given(st.one_of(webhook_bodies(), st.binary(max_size=200), st.sampled_from(EDGE_BODIES)))
def test_fuzz_webhook_parser_raises_only_bad_event(body: bytes) -> None:
    try:
        event = parse_event(body)
        _ = event.safe_payload
    except BadEvent as e:
        assert e.status == 400 and "\n" not in str(e)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from core.db import Database
    from ipad.store.registry import Registry
    from tests.fixtures.mdm import start_webhook

    db = Database(f"sqlite:///{tmp_path_factory.mktemp('fuzz-webhook') / 'werne.db'}")
    w = start_webhook(Registry(db, school_of=lambda s: ("gs-demo", "pupil")), None, max_body=4 * 1024 * 1024)
    session = requests.Session()
    yield w.url, session
    session.close()
    w.stop()
    db.dispose()


@fuzz(400)
@given(st.one_of(webhook_bodies(), st.binary(max_size=200), st.sampled_from(EDGE_BODIES)))
def test_fuzz_webhook_receiver_never_answers_5xx(receiver, body: bytes) -> None:  # type: ignore[no-untyped-def]
    url, session = receiver
    r = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code < 500, (r.status_code, r.text, body[:200])
