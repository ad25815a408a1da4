"""The site inventory: laptops and the VPN gateway (standard Ansible YAML), schools and iPads.

Layout of `inventories/<site>/`:
    hosts.yml     Ansible YAML inventory; groups `laptops` and `vpn_gateway`
    schools.yml   the schools: id, name, department, support contact, Apps and Books location
    ipads.csv     one row per iPad: serial, model, school, group (pupil|teacher|shared);
                  an Apple School Manager export maps onto it (header aliases, `;` or `,`, BOM)

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
}


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


class Gateway(BaseModel):
    """The WireGuard gateway host."""

    model_config = ConfigDict(extra="allow")

    name: str
    ansible_host: str
    ansible_port: int = 22


class School(BaseModel):
    """A school whose iPads the city manages."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,31}$")
    name: str
    department: str = ""
    support_phone: str = ""
    support_email: str = ""
    # IANA time zone of the school (software-update deadlines are local time); empty: ddm.default_time_zone.
    time_zone: str = ""

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


@dataclass
class Inventory:
    root: Path
    laptops: dict[str, Laptop] = field(default_factory=dict)
    gateways: dict[str, Gateway] = field(default_factory=dict)
    schools: dict[str, School] = field(default_factory=dict)
    ipads: dict[str, IPad] = field(default_factory=dict)

    @property
    def hosts_file(self) -> Path:
        return self.root / "hosts.yml"

    def digest(self) -> str:
        """SHA-256 over the inventory's files, for evidence that a run used this inventory."""
        h = hashlib.sha256()
        for name in ("hosts.yml", "schools.yml", "ipads.csv"):
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


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


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
                problems.add(path, hline, f"host '{host}': {_first_error(e)}")
    # Duplicate addresses: SSH endpoints and VPN addresses must be unique.
    endpoints: dict[tuple[str, int], str] = {}
    for h in [*inv.laptops.values(), *inv.gateways.values()]:
        ep = (h.ansible_host, h.ansible_port)
        if ep in endpoints:
            where = f"{h.ansible_host}:{h.ansible_port}"
            problems.add(path, host_lines[h.name][1],
                         f"duplicate address {where} (hosts '{endpoints[ep]}' and '{h.name}')")
        else:
            endpoints[ep] = h.name
    vpn: dict[str, str] = {}
    for lap in inv.laptops.values():
        a = str(lap.vpn_address)
        if a in vpn:
            problems.add(path, host_lines[lap.name][1],
                         f"duplicate VPN address {a} (hosts '{vpn[a]}' and '{lap.name}')")
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
            problems.add(path, line, f"school: {_first_error(e)}")
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
            problems.append(f"{name}:{line}: {row['serial']}: {_first_error(e)}")
            continue
        if schools is not None and ipad.school not in schools:
            problems.append(f"{name}:{line}: {ipad.serial}: unknown school '{ipad.school}'")
            continue
        good.append((line, ipad))
    return good


def _load_ipads(inv: Inventory, problems: _Problems) -> None:
    path = inv.root / "ipads.csv"
    if not path.exists():
        return
    try:
        raw = read_regular_file(path)
    except OSError as e:
        problems.add(path, None, f"cannot read: {e.strerror}")
        return
    first_line: dict[str, int] = {}
    for line, ipad in parse_ipad_rows(raw, str(path), inv.schools, problems):
        if ipad.serial in first_line:
            problems.add(path, line, f"duplicate serial {ipad.serial} (first at line {first_line[ipad.serial]})")
            continue
        first_line[ipad.serial] = line
        inv.ipads[ipad.serial] = ipad


@dataclass
class InventoryCheck(Findings):
    """`werne inventory check`: every problem (with file and line), or what the inventory holds."""

    root: Path
    problems: list[str] = field(default_factory=list)
    laptops: int = 0
    vpn_gateways: int = 0
    schools: int = 0
    ipads: int = 0

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
                "vpn_gateways": self.vpn_gateways, "schools": self.schools, "ipads": self.ipads}


def check_inventory(root: str | Path) -> InventoryCheck:
    """Validate an inventory directory and report, never raise, what is wrong with it."""
    try:
        inv = load_inventory(root)
    except InventoryError as e:
        return InventoryCheck(root=Path(root), problems=e.problems)
    return InventoryCheck(root=inv.root, laptops=len(inv.laptops), vpn_gateways=len(inv.gateways),
                          schools=len(inv.schools), ipads=len(inv.ipads))


def load_inventory(root: str | Path) -> Inventory:
    """Load and validate an inventory directory. Raises InventoryError listing every problem."""
    root = Path(root)
    if not root.is_dir():
        raise InventoryError([f"inventory directory {root} does not exist"])
    inv = Inventory(root=root)
    problems = _Problems()
    _load_hosts(inv, problems)
    _load_schools(inv, problems)
    _load_ipads(inv, problems)
    if problems:
        raise InventoryError(list(problems))
    return inv
