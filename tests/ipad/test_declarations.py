"""Declarations from declarations/*.yaml: Apple's declarative schema, goldens, one-line errors, KMFDDM sets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from ipad.errors import DeclarationError
from ipad.payloads import declaration_schema as ddm_schema
from ipad.payloads.declarations import (
    DECLARATIONS_DIR,
    available_declarations,
    build_update_declaration,
    declarations_for_group,
    group_sets,
    load_declaration_groups,
)
from tests.fixtures.site import REPO
from tests.golden import GOLDEN_DIR, assert_golden
from tests.parts import require_file

APPLE_REF = REPO.parent / "shared" / "reference" / "apple-device-management"
GOLDEN = GOLDEN_DIR / "declarations"


@pytest.fixture
def decl_dir(tmp_path: Path) -> Path:
    """A writable copy of declarations/, to break on purpose."""
    d = tmp_path / "declarations"
    shutil.copytree(DECLARATIONS_DIR, d)
    return d


# --- goldens --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["passcode", "softwareupdate-settings", "status-subscriptions"])
def test_golden_group_declarations(name):
    decl = next(d for d in declarations_for_group("pupil") if d.name == name)
    assert_golden(GOLDEN / f"{name}.json", decl.to_json())


def test_golden_update_declaration():
    decl = build_update_declaration("gs-demo", "18.3", datetime(2027, 1, 15, 18, 0))
    assert_golden(GOLDEN / "update.gs-demo.18.3.json", decl.to_json())


def test_passcode_declaration_has_the_indigo_base_values_of_the_passcode_profile():
    from ipad.payloads.profiles import mscp_payload_keys

    profile = mscp_payload_keys("indigo_base", "com.apple.mobiledevice.passwordpolicy")
    decl = next(d for d in declarations_for_group("teacher") if d.name == "passcode").payload
    assert decl["MinimumLength"] == profile["minLength"] == 8
    assert decl["MaximumFailedAttempts"] == profile["maxFailedAttempts"]
    assert decl["MaximumInactivityInMinutes"] == profile["maxInactivity"]
    assert decl["PasscodeReuseLimit"] == profile["pinHistory"]
    assert decl["RequireComplexPasscode"] is (not profile["allowSimple"]) is True
    assert len(decl) == len(profile)


def test_every_declaration_of_every_group_is_valid_and_sets_are_per_school_and_group():
    groups = load_declaration_groups()
    for group in groups.groups:
        for decl in declarations_for_group(group):
            assert ddm_schema.validate_declaration(decl.to_dict()) == []
    sets = group_sets([("gs-demo", "pupil"), ("gym-demo", "teacher"), ("gs-demo", "pupil")])
    assert {k: [d.identifier for d in v] for k, v in sets.items()} == {
        "werne-gs-demo-pupil": ["de.werne.ddm.passcode", "de.werne.ddm.softwareupdate-settings",
                                "de.werne.ddm.status-subscriptions"],
        "werne-gym-demo-teacher": ["de.werne.ddm.passcode", "de.werne.ddm.softwareupdate-settings",
                                   "de.werne.ddm.status-subscriptions"],
    }
    assert "softwareupdate-enforcement" in available_declarations()


# --- the schema check -------------------------------------------------------------------------------

def base(**payload):
    return {"Type": "com.apple.configuration.passcode.settings", "Identifier": "x", "ServerToken": "t",
            "Payload": payload}


@pytest.mark.parametrize(("declaration", "problems"), [
    (base(MinimumLength=8), []),
    (base(MinimumLength=20), ["Payload.MinimumLength: value 20 above maximum 16"]),
    (base(MinimumLength="8"), ["Payload.MinimumLength: expected integer, got string"]),
    (base(Minimumlength=8), ["Payload.Minimumlength: unknown key"]),
    (base(ChangeAtNextAuth=True), ["Payload.ChangeAtNextAuth: not supported on iOS"]),
    ({**base(), "Type": "com.apple.configuration.nope"},
     ["Type: unknown declaration type 'com.apple.configuration.nope'"]),
    ({"Type": "com.apple.configuration.screensharing.host.settings", "Identifier": "x", "ServerToken": "t",
      "Payload": {}}, ["Type: com.apple.configuration.screensharing.host.settings is not supported on iOS"]),
    ({k: v for k, v in base().items() if k != "ServerToken"}, ["ServerToken: missing required key"]),
    ({**base(), "Identifier": "x" * 65}, ["Identifier: longer than 64 octets"]),
    ({"Type": "com.apple.configuration.softwareupdate.enforcement.specific", "Identifier": "x", "ServerToken": "t",
      "Payload": {"TargetOSVersion": "18.3"}}, ["Payload.TargetLocalDateTime: missing required key"]),
    ({"Type": ddm_schema.STATUS_SUBSCRIPTIONS, "Identifier": "x", "ServerToken": "t",
      "Payload": {"StatusItems": [{"Name": "softwareupdate.*"}, {"Name": "diskmanagement.filevault.enabled"}]}},
     ["Payload.StatusItems[0].Name: unknown status item 'softwareupdate.*'",
      "Payload.StatusItems[1].Name: diskmanagement.filevault.enabled is not reported on iOS"]),
])
def test_validate_declaration(declaration, problems):
    assert ddm_schema.validate_declaration(declaration) == problems


# --- bad data: one line ------------------------------------------------------------------------------

@pytest.mark.parametrize(("file", "text", "message"), [
    ("passcode.yaml", "name: passcode\ntype: com.apple.configuration.passcode.settings\nkeys: {MinimumLength: 99}\n",
     "declaration passcode: Payload.MinimumLength: value 99 above maximum 16"),
    ("passcode.yaml", "name: passcode\ntype: com.apple.configuration.passcode.settings\nkey: {}\n",
     "declaration passcode: {dir}/passcode.yaml: key: unknown key"),
    ("passcode.yaml", "name: passcode\ntype: [\n", None),
    ("status-subscriptions.yaml", "name: status-subscriptions\ntype: com.apple.configuration.management."
     "status-subscriptions\nstatus_items: [softwareupdate.install-state, software.update]\n",
     "declaration status-subscriptions: Payload.StatusItems[1].Name: unknown status item 'software.update'"),
    ("groups.yaml", "identifier_prefix: de.werne.ddm\nset_prefix: werne\ngroups: {pupil: [passcod]}\n",
     "declaration groups: {dir}/groups.yaml: group 'pupil' names unknown declaration 'passcod'"),
])
def test_bad_declaration_data_is_one_line(decl_dir, file, text, message):
    (decl_dir / file).write_text(text)
    with pytest.raises(DeclarationError) as e:
        declarations_for_group("pupil", decl_dir)
    text_of_error = str(e.value)
    assert "\n" not in text_of_error and e.value.exit_code == 2
    if message is None:
        assert text_of_error.startswith(f"declaration passcode: {decl_dir}/passcode.yaml:")
        assert "broken YAML" in text_of_error
    else:
        assert text_of_error == message.format(dir=decl_dir)


def test_unknown_group_is_one_line():
    with pytest.raises(DeclarationError, match=r"^unknown iPad group 'guest' \(known: pupil, shared, teacher\)$"):
        declarations_for_group("guest")


# --- the derived schema -------------------------------------------------------------------------------

def test_derived_declarative_json_has_no_prose_and_names_its_source():
    data = json.loads((REPO / "data" / "apple-ddm-schema.json").read_text())
    assert "apple/device-management" in data["_source"]
    assert "MIT" in data["_licence"] and "Apple Inc." in data["_licence"]
    text = json.dumps(data)
    assert '"content"' not in text and '"title"' not in text and '"description"' not in text
    enforcement = data["declarations"]["com.apple.configuration.softwareupdate.enforcement.specific"]
    assert enforcement["ios"] == "17.0"
    assert [(k["key"], k.get("req", False)) for k in enforcement["keys"]] == [
        ("TargetOSVersion", True), ("TargetBuildVersion", False), ("TargetLocalDateTime", True), ("DetailsURL", False)]
    assert data["declarations"]["com.apple.configuration.softwareupdate.settings"]["ios"] == "18.0"
    assert data["status_items"]["softwareupdate.install-state"]["ios"] == "17.0"


def test_derive_apple_declarative_reproduces_the_committed_json(tmp_path):
    require_file("Apple's device-management reference data", APPLE_REF)
    out = tmp_path / "ddm.json"
    tool = REPO / "tools" / "derive_apple_declarative.py"
    run = subprocess.run([sys.executable, str(tool), str(APPLE_REF), str(out)],
                         capture_output=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr.decode()
    assert out.read_bytes() == (REPO / "data" / "apple-ddm-schema.json").read_bytes()


# --- issue 22: the enforcement identifier fits Apple's 64 octets for every school id -------------

def test_the_inventorys_school_id_limit_and_apples_identifier_limit_are_tied():
    """One relation: the longest enforcement identifier (prefix budget, the longest school id the
    inventory takes, the longest version) is exactly Apple's limit, and the shipped prefix fits it."""
    from core.inventory import SCHOOL_ID_MAX
    from ipad.payloads.declarations import (
        IDENTIFIER_MAX,
        OS_VERSION_MAX,
        PREFIX_MAX,
        UPDATE_ID_NAME,
        load_declaration_groups,
    )

    assert IDENTIFIER_MAX == 64
    assert PREFIX_MAX + len(f".{UPDATE_ID_NAME}.") + SCHOOL_ID_MAX + 1 + OS_VERSION_MAX == IDENTIFIER_MAX
    assert len(load_declaration_groups().identifier_prefix) <= PREFIX_MAX


def test_the_longest_school_id_gets_a_valid_update_declaration():
    from pydantic import ValidationError

    from core.inventory import SCHOOL_ID_MAX, School
    from ipad.payloads.declaration_schema import validate_declaration
    from ipad.payloads.declarations import IDENTIFIER_MAX

    longest = ("gesamtschule-werne-" + "a" * SCHOOL_ID_MAX)[:SCHOOL_ID_MAX]
    School(id=longest, name="x")  # the inventory takes it
    with pytest.raises(ValidationError):
        School(id=longest + "b", name="x")  # and no longer one
    decl = build_update_declaration(longest, "26.10.10", datetime(2027, 1, 15, 18, 0))
    assert decl.identifier == f"de.werne.ddm.update.{longest}.26.10.10"
    assert len(decl.identifier.encode()) <= IDENTIFIER_MAX
    assert validate_declaration(decl.to_dict()) == []
    # The real name from the issue, with a patch version (65 octets in the old scheme).
    assert build_update_declaration("gesamtschule-werne", "18.3.1", datetime(2027, 1, 15)).identifier == \
        "de.werne.ddm.update.gesamtschule-werne.18.3.1"


def test_a_prefix_beyond_its_budget_is_refused_at_the_groups_file(tmp_path):
    import shutil

    from ipad.errors import DeclarationError, ProfileError
    from ipad.payloads.declarations import DECLARATIONS_DIR, PREFIX_MAX, load_declaration_groups

    d = tmp_path / "declarations"
    shutil.copytree(DECLARATIONS_DIR, d)
    groups = d / "groups.yaml"
    groups.write_text(groups.read_text().replace("identifier_prefix: de.werne.ddm",
                                                 "identifier_prefix: de.stadt-werne.schulen.ddm"))
    assert len("de.stadt-werne.schulen.ddm") > PREFIX_MAX
    with pytest.raises((DeclarationError, ProfileError)) as e:
        load_declaration_groups(d)
    assert "identifier_prefix" in str(e.value)
