"""The site inventory: laptops and the VPN gateway (standard Ansible YAML), schools and iPads.

Layout of `inventories/<site>/`:
    hosts.yml     Ansible YAML inventory; groups `laptops` and `vpn_gateway`
    schools.yml   the schools: id, name, department, support contact, Apps and Books location
    ipads.csv     one row per iPad: serial, model, school, group (pupil|teacher|shared), name,
                  room (optional: the room's Apple TVs are its AirPlay destinations);
                  an Apple School Manager export maps onto it (header aliases, `;` or `,`, BOM)
    appletvs.csv  one row per Apple TV: serial, school, room, model, name (optional; default
                  "<school>-<room>"), airplay_id (optional: the AirPlay device id, else what the
                  Apple TV reports as DeviceID)

`load_inventory` collects every problem with its file and line before it raises, so
`werne inventory check` can show them all at once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.csvio import CSVFormatError, decode_csv_bytes, read_rows
from core.errors import EXIT_INPUT, EXIT_OK, InventoryError
from core.files import read_regular_file
from core.findings import Findings
from core.validation import first_error
from core.yamlio import YAMLInputError, compose, construct, scalar_key

KNOWN_GROUPS = {"laptops", "vpn_gateway"}
IPAD_GROUPS = ("pupil", "teacher", "shared")
# Apple serials: 10 (randomised, 2021+) to 12 characters, upper-case letters and digits.
SERIAL_RE = re.compile(r"^[A-Z0-9]{10,12}$")
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

IPAD_CSV_ALIASES = {
    "serial": {"serial number", "serialnumber", "seriennummer", "device serial number"},
    "model": {"device model", "modell", "product"},
    "school": {"location", "standort", "schule", "school id"},
    "group": {"gruppe", "role", "rolle"},
    "name": {"device name", "gerätename", "geraetename"},
    "room": {"raum", "klassenraum"},
}
APPLETV_CSV_ALIASES = {
    "serial": IPAD_CSV_ALIASES["serial"],
    "model": IPAD_CSV_ALIASES["model"],
    "school": IPAD_CSV_ALIASES["school"],
    "room": {"raum", "klassenraum"},
    "name": IPAD_CSV_ALIASES["name"],
    "airplay_id": {"airplay id", "device id", "deviceid", "airplay-id"},
}
# A room name: what a school writes on the door ("R 101", "Musik 2", "A.0.12").
ROOM_RE = re.compile(r"^[\w][\w .\-/]{0,31}$")
# The AirPlay device id: Apple's AllowList DeviceID format, a MAC address.
AIRPLAY_ID_RE = re.compile(r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$")


def normalise_serial(raw: str) -> str:
    return raw.strip().upper().replace(" ", "")


class Laptop(BaseModel):
    """A home-office laptop, as the inventory describes it."""

    model_config = ConfigDict(extra="allow")

    name: str
    ansible_host: str
    ansible_port: int = 22
    owner: str
    vpn_address: ipaddress.IPv4Address | ipaddress.IPv6Address
    asset_tag: str = Field(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$")

    @field_validator("name")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if not HOSTNAME_RE.match(v):
            raise ValueError("host name must be lower-case letters, digits and '-'")
        return v

    @property
    def home_office(self) -> bool:
        """Marked `home_office: true` (exactly): reached through its VPN tunnel once enrolled
        (provisioning.home.reach)."""
        return (self.model_extra or {}).get("home_office") is True


class Gateway(BaseModel):
    """The WireGuard gateway host."""

    model_config = ConfigDict(extra="allow")

    name: str
    ansible_host: str
    ansible_port: int = 22


# The longest school id the inventory takes. It is part of DDM declaration identifiers, which Apple
# limits to 64 octets: ipad.payloads.declarations computes its budget from this constant.
SCHOOL_ID_MAX = 32


class School(BaseModel):
    """A school whose iPads the city manages."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=rf"^[a-z0-9][a-z0-9-]{{1,{SCHOOL_ID_MAX - 1}}}$")
    name: str
    department: str = ""
    support_phone: str = ""
    support_email: str = ""
    # IANA time zone of the school (software-update deadlines are local time); empty: ddm.default_time_zone.
    time_zone: str = ""
    # Extra Apple TV profiles this school wants beside the group's set (profiles/<name>.yaml),
    # e.g. [tv-conference-room] for Conference Room Display.
    appletv_profiles: list[str] = Field(default_factory=list)

    @field_validator("time_zone")
    @classmethod
    def _known_time_zone(cls, v: str) -> str:
        if v:
            try:
                zoneinfo.ZoneInfo(v)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r} (an IANA name like Europe/Berlin)") from None
        return v
    # The Apps and Books location whose app licences this school's iPads use (config [apps]
    # locations); empty: the school gets no store apps.
    apps_location: str = Field(default="", pattern=r"^([a-z0-9][a-z0-9_-]{0,40})?$")


class IPad(BaseModel):
    """A school iPad record, as an Apple School Manager export maps onto it."""

    model_config = ConfigDict(extra="forbid")

    serial: str = Field(pattern=SERIAL_RE.pattern)
    model: str = ""
    school: str
    group: Literal["pupil", "teacher", "shared"]
    name: str = ""
    room: str = Field(default="", pattern=r"^([\w][\w .\-/]{0,31})?$")


class AppleTV(BaseModel):
    """A classroom Apple TV: where it stands (school, room) and how iPads find it for AirPlay."""

    model_config = ConfigDict(extra="forbid")

    serial: str = Field(pattern=SERIAL_RE.pattern)
    model: str = ""
    school: str
    room: str = Field(pattern=ROOM_RE.pattern)
    name: str = Field(default="", max_length=63)
    airplay_id: str = Field(default="", pattern=r"^(([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2})?$")

    @property
    def device_name(self) -> str:
        """The name werne gives the Apple TV (Settings DeviceName), which iPads see in AirPlay."""
        return self.name or f"{self.school}-{self.room}".replace(" ", "-")


@dataclass
class Inventory:
    root: Path
    laptops: dict[str, Laptop] = field(default_factory=dict)
    gateways: dict[str, Gateway] = field(default_factory=dict)
    schools: dict[str, School] = field(default_factory=dict)
    ipads: dict[str, IPad] = field(default_factory=dict)
    appletvs: dict[str, AppleTV] = field(default_factory=dict)

    @property
    def hosts_file(self) -> Path:
        return self.root / "hosts.yml"

    def digest(self) -> str:
        """SHA-256 over the inventory's files, for evidence that a run used this inventory."""
        h = hashlib.sha256()
        for name in ("hosts.yml", "schools.yml", "ipads.csv", "appletvs.csv"):
            p = self.root / name
            if p.exists():
                h.update(name.encode() + b"\0" + p.read_bytes() + b"\0")
        return h.hexdigest()

    def select_laptops(self, names: list[str] | tuple[str, ...]) -> list[Laptop]:
        """The named laptops (all of them when `names` is empty); unknown names are an error."""
        if not names:
            return list(self.laptops.values())
        unknown = [n for n in names if n not in self.laptops]
        if unknown:
            raise InventoryError([f"unknown host: {n} (not in {self.hosts_file})" for n in unknown])
        return [self.laptops[n] for n in names]

    def ipads_of_school(self, school: str | None) -> list[IPad]:
        if school is not None and school not in self.schools:
            raise InventoryError([f"unknown school: {school}"])
        return [i for i in self.ipads.values() if school is None or i.school == school]

    def appletvs_of_school(self, school: str | None) -> list[AppleTV]:
        if school is not None and school not in self.schools:
            raise InventoryError([f"unknown school: {school}"])
        return [t for t in self.appletvs.values() if school is None or t.school == school]

    def appletvs_in_room(self, school: str, room: str) -> list[AppleTV]:
        """The Apple TVs of one room (room names compare without case and spaces)."""
        key = room_key(room)
        return [t for t in self.appletvs.values() if t.school == school and room_key(t.room) == key]


def room_key(room: str) -> str:
    """How rooms compare: "R 101" and "r101" are the same room."""
    return room.replace(" ", "").lower()


# --- YAML with line numbers and duplicate-key detection -----------------------------------

class _Problems(list[str]):
    def add(self, path: Path, line: int | None, msg: str) -> None:
        self.append(f"{path}:{line}: {msg}" if line else f"{path}: {msg}")


def _compose(path: Path, problems: _Problems) -> yaml.Node | None:
    try:
        text = read_regular_file(path).decode("utf-8-sig")
    except FileNotFoundError:
        problems.add(path, None, "file does not exist")
        return None
    except OSError as e:
        problems.add(path, None, f"cannot read: {e.strerror or e.__class__.__name__}")
        return None
    except UnicodeDecodeError:
        problems.add(path, None, "cannot read: not UTF-8 text")
        return None
    try:
        return compose(text, path)
    except YAMLInputError as e:
        problems.append(str(e))
        return None


def _mapping(node: yaml.Node | None, path: Path, problems: _Problems, what: str
             ) -> list[tuple[str, yaml.Node, int]]:
    """(key, value node, line) pairs of a mapping node, reporting duplicate keys."""
    if node is None or (isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null")):
        return []
    if not isinstance(node, yaml.MappingNode):
        problems.add(path, node.start_mark.line + 1, f"{what} must be a mapping")
        return []
    seen: dict[str, int] = {}
    out = []
    for k, v in node.value:
        line = k.start_mark.line + 1
        if scalar_key(k) is None:
            problems.add(path, line, f"{what} key must be a plain name")
            continue
        key = str(k.value)
        if key in seen:
            problems.add(path, line, f"duplicate {what} key '{key}' (first at line {seen[key]})")
            continue
        seen[key] = line
        out.append((key, v, line))
    return out


_BAD = object()  # a value that could not be constructed; its problem is already recorded


def _construct(node: yaml.Node, path: Path, problems: _Problems) -> Any:
    try:
        return construct(node, path)
    except YAMLInputError as e:
        problems.append(str(e))
        return _BAD


def _load_hosts(inv: Inventory, problems: _Problems) -> None:
    path = inv.hosts_file
    root = _compose(path, problems)
    if root is None:
        return
    top = dict((k, (v, ln)) for k, v, ln in _mapping(root, path, problems, "top-level"))
    if "all" not in top:
        problems.add(path, 1, "an Ansible YAML inventory must start with 'all:'")
        return
    all_node, _ = top["all"]
    all_keys = {k: (v, ln) for k, v, ln in _mapping(all_node, path, problems, "'all'")}
    for k, (_, ln) in all_keys.items():
        if k not in ("children", "vars", "hosts"):
            problems.add(path, ln, f"unknown key under 'all': '{k}'")
    if "hosts" in all_keys:
        for name, _, ln in _mapping(all_keys["hosts"][0], path, problems, "host"):
            problems.add(path, ln, f"host '{name}' is in no group; put it under 'laptops' or 'vpn_gateway'")
    children = all_keys.get("children", (None, 0))[0]
    host_lines: dict[str, tuple[str, int]] = {}
    for group, gnode, gline in _mapping(children, path, problems, "group"):
        if group not in KNOWN_GROUPS:
            problems.add(path, gline, f"unknown group '{group}' (known: {', '.join(sorted(KNOWN_GROUPS))})")
            continue
        _load_group(inv, group, gnode, host_lines, problems)
    _check_unique_addresses(inv, {host: line for host, (_, line) in host_lines.items()}, problems)


def _load_group(inv: Inventory, group: str, gnode: yaml.Node, host_lines: dict[str, tuple[str, int]],
                problems: _Problems) -> None:
    """The hosts of one known group into `inv`; `host_lines` (host -> group, line) spans the groups."""
    path = inv.hosts_file
    gkeys = {k: (v, ln) for k, v, ln in _mapping(gnode, path, problems, f"group '{group}'")}
    for k, (_, ln) in gkeys.items():
        if k not in ("hosts", "vars"):
            problems.add(path, ln, f"unknown key under group '{group}': '{k}'")
    group_vars: dict[str, Any] = {}
    if "vars" in gkeys:
        gv = _construct(gkeys["vars"][0], path, problems)
        group_vars = gv if isinstance(gv, dict) else {}
    for host, hnode, hline in _mapping(gkeys.get("hosts", (None, 0))[0], path, problems, "host"):
        if host in host_lines:
            other_group, other_line = host_lines[host]
            problems.add(path, hline, f"duplicate host '{host}' (also in '{other_group}' at line {other_line})")
            continue
        host_lines[host] = (group, hline)
        hvars = _construct(hnode, path, problems) if hnode is not None else None
        if hvars is _BAD:
            continue
        if hvars is not None and not isinstance(hvars, dict):
            problems.add(path, hline, f"host '{host}': host variables must be a mapping")
            continue
        data = {**group_vars, **(hvars or {}), "name": host}
        try:
            if group == "laptops":
                inv.laptops[host] = Laptop.model_validate(data)
            else:
                inv.gateways[host] = Gateway.model_validate(data)
        except ValidationError as e:
            problems.add(path, hline, f"host '{host}': {first_error(e)}")


def _check_unique_addresses(inv: Inventory, host_line: dict[str, int], problems: _Problems) -> None:
    """SSH endpoints and VPN addresses must be unique, and there is at most one gateway."""
    path = inv.hosts_file
    endpoints: dict[tuple[str, int], str] = {}
    hosts: list[Laptop | Gateway] = [*inv.laptops.values(), *inv.gateways.values()]
    for h in hosts:
        ep = (h.ansible_host, h.ansible_port)
        if ep in endpoints:
            where = f"{h.ansible_host}:{h.ansible_port}"
            problems.add(path, host_line[h.name], f"duplicate address {where} (hosts '{endpoints[ep]}' and '{h.name}')")
        else:
            endpoints[ep] = h.name
    vpn: dict[str, str] = {}
    for lap in inv.laptops.values():
        a = str(lap.vpn_address)
        if a in vpn:
            problems.add(path, host_line[lap.name], f"duplicate VPN address {a} (hosts '{vpn[a]}' and '{lap.name}')")
        else:
            vpn[a] = lap.name
    if len(inv.gateways) > 1:
        problems.add(path, None, "more than one host in group 'vpn_gateway'")


def _load_schools(inv: Inventory, problems: _Problems) -> None:
    path = inv.root / "schools.yml"
    if not path.exists():
        return
    root = _compose(path, problems)
    if root is None:
        return
    top = {k: (v, ln) for k, v, ln in _mapping(root, path, problems, "top-level")}
    node = top.get("schools", (None, 0))[0]
    if node is None:
        problems.add(path, 1, "expected a top-level 'schools:' list")
        return
    if not isinstance(node, yaml.SequenceNode):
        problems.add(path, node.start_mark.line + 1, "'schools' must be a list")
        return
    for item in node.value:
        line = item.start_mark.line + 1
        data = _construct(item, path, problems)
        if data is _BAD:
            continue
        try:
            school = School.model_validate(data)
        except ValidationError as e:
            problems.add(path, line, f"school: {first_error(e)}")
            continue
        if school.id in inv.schools:
            problems.add(path, line, f"duplicate school id '{school.id}'")
            continue
        inv.schools[school.id] = school


def parse_ipad_rows(raw: bytes, name: str, schools: dict[str, School] | None,
                    problems: list[str]) -> list[tuple[int, IPad]]:
    """Validate iPad rows from CSV bytes; appends `name:line: reason` problems, returns good rows."""
    try:
        rows = read_rows(decode_csv_bytes(raw, name), name, IPAD_CSV_ALIASES, {"serial", "school", "group"})
    except CSVFormatError as e:
        problems.append(str(e))
        return []
    good: list[tuple[int, IPad]] = []
    for line, row in rows:
        row["serial"] = normalise_serial(row.get("serial", ""))
        row["group"] = row.get("group", "").strip().lower()
        if not SERIAL_RE.match(row["serial"]):
            problems.append(f"{name}:{line}: bad serial format '{row['serial']}' "
                            "(10-12 upper-case letters and digits)")
            continue
        try:
            ipad = IPad.model_validate(row)
        except ValidationError as e:
            problems.append(f"{name}:{line}: {row['serial']}: {first_error(e)}")
            continue
        if schools is not None and ipad.school not in schools:
            problems.append(f"{name}:{line}: {ipad.serial}: unknown school '{ipad.school}'")
            continue
        if "apple tv" in ipad.model.lower() or ipad.model.lower().startswith("appletv"):
            problems.append(f"{name}:{line}: {ipad.serial}: '{ipad.model}' is an Apple TV, not an iPad "
                            "(Apple TVs go into appletvs.csv)")
            continue
        good.append((line, ipad))
    return good


def _load_ipads(inv: Inventory, problems: _Problems) -> dict[str, int]:
    """The iPads into `inv`; returns serial -> line, for later checks across files."""
    path = inv.root / "ipads.csv"
    first_line: dict[str, int] = {}
    if not path.exists():
        return first_line
    try:
        raw = read_regular_file(path)
    except OSError as e:
        problems.add(path, None, f"cannot read: {e.strerror}")
        return first_line
    for line, ipad in parse_ipad_rows(raw, str(path), inv.schools, problems):
        if ipad.serial in first_line:
            problems.add(path, line, f"duplicate serial {ipad.serial} (first at line {first_line[ipad.serial]})")
            continue
        first_line[ipad.serial] = line
        inv.ipads[ipad.serial] = ipad
    return first_line


def _load_appletvs(inv: Inventory, problems: _Problems) -> None:
    """appletvs.csv: the classroom Apple TVs; a serial also in ipads.csv is refused there."""
    path = inv.root / "appletvs.csv"
    if not path.exists():
        return
    try:
        raw = read_regular_file(path)
        rows = read_rows(decode_csv_bytes(raw, str(path)), str(path), APPLETV_CSV_ALIASES,
                         {"serial", "school", "room"})
    except OSError as e:
        problems.add(path, None, f"cannot read: {e.strerror}")
        return
    except CSVFormatError as e:
        problems.append(str(e))
        return
    first_line: dict[str, int] = {}
    names: dict[tuple[str, str], int] = {}
    for line, row in rows:
        row["serial"] = normalise_serial(row.get("serial", ""))
        if not SERIAL_RE.match(row["serial"]):
            problems.add(path, line, f"bad serial format '{row['serial']}' (10-12 upper-case letters and digits)")
            continue
        try:
            tv = AppleTV.model_validate(row)
        except ValidationError as e:
            problems.add(path, line, f"{row['serial']}: {first_error(e)}")
            continue
        if tv.school not in inv.schools:
            problems.add(path, line, f"{tv.serial}: unknown school '{tv.school}'")
            continue
        if tv.serial in first_line:
            problems.add(path, line, f"duplicate serial {tv.serial} (first at line {first_line[tv.serial]})")
            continue
        key = (tv.school, tv.device_name.lower())
        if key in names:
            problems.add(path, line, f"{tv.serial}: name '{tv.device_name}' is taken (line {names[key]}); "
                         "give each Apple TV of a room its own name")
            continue
        first_line[tv.serial], names[key] = line, line
        inv.appletvs[tv.serial] = tv


def _check_kinds(inv: Inventory, ipad_lines: dict[str, int], problems: _Problems) -> None:
    """An Apple TV serial in the iPad list is refused, at its line in ipads.csv."""
    path = inv.root / "ipads.csv"
    for serial in sorted(set(inv.ipads) & set(inv.appletvs), key=lambda x: ipad_lines.get(x, 0)):
        problems.add(path, ipad_lines.get(serial), f"serial {serial} is an Apple TV (in appletvs.csv), "
                     "not an iPad: remove it from ipads.csv")
        del inv.ipads[serial]


@dataclass
class InventoryCheck(Findings):
    """`werne inventory check`: every problem (with file and line), or what the inventory holds."""

    root: Path
    problems: list[str] = field(default_factory=list)
    laptops: int = 0
    vpn_gateways: int = 0
    schools: int = 0
    ipads: int = 0
    appletvs: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        # A bad inventory is bad input (exit 2), not a finding about the devices.
        return EXIT_OK if self.ok else EXIT_INPUT

    def to_dict(self) -> dict[str, Any]:
        if not self.ok:
            return {"ok": False, "problems": self.problems}
        return {"ok": True, "inventory": str(self.root), "laptops": self.laptops,
                "vpn_gateways": self.vpn_gateways, "schools": self.schools, "ipads": self.ipads,
                "appletvs": self.appletvs}


def check_inventory(root: str | Path) -> InventoryCheck:
    """Validate an inventory directory and report, never raise, what is wrong with it."""
    try:
        inv = load_inventory(root)
    except InventoryError as e:
        return InventoryCheck(root=Path(root), problems=e.problems)
    return InventoryCheck(root=inv.root, laptops=len(inv.laptops), vpn_gateways=len(inv.gateways),
                          schools=len(inv.schools), ipads=len(inv.ipads), appletvs=len(inv.appletvs))


def load_inventory(root: str | Path) -> Inventory:
    """Load and validate an inventory directory. Raises InventoryError listing every problem."""
    root = Path(root)
    if not root.is_dir():
        raise InventoryError([f"inventory directory {root} does not exist"])
    inv = Inventory(root=root)
    problems = _Problems()
    _load_hosts(inv, problems)
    _load_schools(inv, problems)
    ipad_lines = _load_ipads(inv, problems)
    _load_appletvs(inv, problems)
    _check_kinds(inv, ipad_lines, problems)
    if problems:
        raise InventoryError(list(problems))
    return inv
