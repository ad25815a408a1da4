"""Load and validate the baselines: YAML files of rules, each with references, a check and a remediation.

A baseline file has `baseline:` (id, fleet, title) and `rules:`. Each rule's check is either
declarative (`fact`, `op`, `expected`; or `all:` a list of those) or a named Python check
(`python: NAME`, `params: {...}`) of compliance.checks. Every problem is reported with
its file and line before BaselineError is raised.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compliance.checks import PYTHON_CHECKS
from compliance.errors import BaselineError
from core.files import read_regular_file
from core.validation import first_error
from core.yamlio import YAMLInputError, compose, construct, scalar_key

BASELINES_DIR = Path(__file__).resolve().parent / "baselines"
Fleet = Literal["laptops", "ipads", "appletvs"]
Severity = Literal["low", "medium", "high", "critical"]
OPERATORS = frozenset(
    {
        "eq",
        "ne",
        "in",
        "not_in",
        "ge",
        "gt",
        "le",
        "lt",
        "version_ge",
        "version_lt",
        "contains",
        "not_contains",
        "subset",
        "superset",
        "matches",
        "exists",
        "absent",
        "true",
        "false",
        "empty",
        "nonempty",
    }
)
# Operators that take no `expected` value.
UNARY_OPERATORS = frozenset({"exists", "absent", "true", "false", "empty", "nonempty"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class References(_Strict):
    """Where a rule comes from: IT-Grundschutz, Grundschutz++, Mindeststandard, CIS, mSCP ids."""

    grundschutz: list[str] = Field(min_length=1)
    gspp: list[str] = []
    mindeststandard: list[str] = []
    cis: list[str] = []
    mscp: list[str] = []


class FactCheck(_Strict):
    """One comparison of a collected fact (dotted path) with an expected value."""

    fact: str = Field(min_length=1)
    op: str
    expected: Any = None

    @model_validator(mode="after")
    def _known_op(self) -> FactCheck:
        if self.op not in OPERATORS:
            raise ValueError(f"unknown operator '{self.op}' (known: {', '.join(sorted(OPERATORS))})")
        if self.op not in UNARY_OPERATORS and self.expected is None:
            raise ValueError(f"operator '{self.op}' needs 'expected'")
        return self


class Check(_Strict):
    """A rule's check: one fact comparison, all of several, or a named Python check."""

    fact: str | None = None
    op: str | None = None
    expected: Any = None
    all: list[FactCheck] | None = None
    python: str | None = None
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _one_kind(self) -> Check:
        kinds = [self.fact is not None, self.all is not None, self.python is not None]
        if sum(kinds) != 1:
            raise ValueError("a check has exactly one of 'fact' (with op/expected), 'all' or 'python'")
        if self.fact is not None:
            FactCheck(fact=self.fact, op=self.op or "", expected=self.expected)
        if self.params and self.python is None:
            raise ValueError("'params' only go with a 'python' check")
        return self

    def comparisons(self) -> list[FactCheck]:
        if self.fact is not None:
            return [FactCheck(fact=self.fact, op=self.op or "", expected=self.expected)]
        return list(self.all or [])


class Remediation(_Strict):
    """What fixes a failing rule: an Ansible role, an MDM profile, or an action for people."""

    role: str | None = None
    profile: str | None = None
    action: str | None = None

    @model_validator(mode="after")
    def _some(self) -> Remediation:
        if not (self.role or self.profile or self.action):
            raise ValueError("remediation needs a role, a profile or an action")
        return self

    def describe(self) -> str:
        parts = []
        if self.role:
            parts.append(f"role {self.role}")
        if self.profile:
            parts.append(f"profile {self.profile}")
        if self.action:
            parts.append(self.action)
        return "; ".join(parts)


class Rule(_Strict):
    """One check of a baseline."""

    id: str = Field(pattern=r"^[a-z][a-z0-9]*(-[a-z0-9]+)+$", max_length=64)
    title: str = Field(min_length=3)
    severity: Severity
    rationale: str = Field(min_length=10)
    references: References
    check: Check
    remediation: Remediation
    # Evaluate even when the device did not answer (e.g. "in contact within N days").
    when_unreachable: bool = False
    # "fleet": checked once for the whole fleet, on its fleet-wide facts (the MDM push certificate),
    # not on each device.
    scope: Literal["device", "fleet"] = "device"


class BaselineHeader(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]+$")
    fleet: Fleet
    title: str
    version: int = 1


@dataclass
class Baseline:
    """A loaded baseline file: its header, rules and the digest of its bytes."""

    header: BaselineHeader
    rules: list[Rule]
    path: Path
    digest: str

    @property
    def fleet(self) -> str:
        return self.header.fleet


@dataclass
class BaselineSet:
    """Every baseline of a run, with the combined digest stored as evidence."""

    baselines: list[Baseline] = field(default_factory=list)

    def for_fleet(self, fleet: str) -> list[Rule]:
        return [r for b in self.baselines if b.fleet == fleet for r in b.rules]

    def rule(self, rule_id: str) -> Rule:
        for b in self.baselines:
            for r in b.rules:
                if r.id == rule_id:
                    return r
        raise KeyError(rule_id)

    @property
    def rule_ids(self) -> set[str]:
        return {r.id for b in self.baselines for r in b.rules}

    def digest(self) -> str:
        h = hashlib.sha256()
        for b in sorted(self.baselines, key=lambda b: b.path.name):
            h.update(b.path.name.encode() + b"\0" + b.digest.encode() + b"\0")
        return h.hexdigest()


def load_baseline_file(
    path: Path, known_python_checks: set[str] | None = None
) -> tuple[Baseline | None, list[str]]:
    """Parse one baseline file; returns (baseline or None, problems as `file:line: reason`)."""
    try:
        raw = read_regular_file(path)
    except FileNotFoundError:
        return None, [f"{path}: file does not exist"]
    except OSError as e:
        return None, [f"{path}: cannot read: {e.__class__.__name__}"]
    checks = None if known_python_checks is None else frozenset(known_python_checks)
    header, rules, problems = _parse_baseline(raw, path, checks)
    if problems or header is None:
        return None, list(problems)
    return Baseline(header=header, rules=list(rules), path=path, digest=hashlib.sha256(raw).hexdigest()), []


# Parsed once per process for the same bytes: a shard worker judges shard after shard with the
# same files. The key is the file's content, so an edited file is parsed again; the rules
# and headers are frozen models, and each call gets its own list of them.
@lru_cache(maxsize=32)
def _parse_baseline(
    raw: bytes, path: Path, known_python_checks: frozenset[str] | None
) -> tuple[BaselineHeader | None, tuple[Rule, ...], tuple[str, ...]]:
    problems: list[str] = []
    try:
        root = compose(raw.decode("utf-8-sig"), path)
    except UnicodeDecodeError as e:
        return None, (), (f"{path}: cannot read: {e.__class__.__name__}",)
    except YAMLInputError as e:
        return None, (), (str(e),)
    if not isinstance(root, yaml.MappingNode):
        return None, (), (f"{path}: a baseline is a mapping with 'baseline:' and 'rules:'",)
    nodes = {scalar_key(k): v for k, v in root.value}
    unknown = sorted(str(k) for k in set(nodes) - {"baseline", "rules"})
    if unknown:
        problems.append(f"{path}: unknown top-level key(s): {', '.join(unknown)}")
    header = None
    try:
        header = BaselineHeader.model_validate(construct(nodes["baseline"], path) if "baseline" in nodes else None)
    except ValidationError as e:
        problems.append(f"{path}:1: baseline: {first_error(e)}")
    except YAMLInputError as e:
        problems.append(str(e))
    rules_node = nodes.get("rules")
    rules: list[Rule] = []
    if not isinstance(rules_node, yaml.SequenceNode):
        problems.append(f"{path}: 'rules' must be a list")
    else:
        seen: dict[str, int] = {}
        for item in rules_node.value:
            line = item.start_mark.line + 1
            try:
                data = construct(item, path)
            except YAMLInputError as e:
                problems.append(str(e))
                continue
            rid = data.get("id", "?") if isinstance(data, dict) else "?"
            try:
                rule = Rule.model_validate(data)
            except ValidationError as e:
                problems.append(f"{path}:{line}: rule {rid}: {first_error(e)}")
                continue
            if rule.id in seen:
                problems.append(
                    f"{path}:{line}: duplicate rule id '{rule.id}' (first at line {seen[rule.id]})"
                )
                continue
            if (
                known_python_checks is not None
                and rule.check.python
                and rule.check.python not in known_python_checks
            ):
                problems.append(f"{path}:{line}: rule {rule.id}: unknown python check '{rule.check.python}'")
                continue
            seen[rule.id] = line
            rules.append(rule)
    return header, tuple(rules), tuple(problems)


def load_baselines(directory: Path | None = None) -> BaselineSet:
    """Load every `*.yaml` baseline in `directory` (default: the shipped ones); raise BaselineError."""
    directory = directory or BASELINES_DIR
    if not directory.is_dir():
        raise BaselineError([f"baselines directory {directory} does not exist"])
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise BaselineError([f"{directory}: no baseline files (*.yaml)"])
    problems: list[str] = []
    out = BaselineSet()
    ids: dict[str, Path] = {}
    for f in files:
        b, errs = load_baseline_file(f, set(PYTHON_CHECKS))
        problems += errs
        if b is None:
            continue
        for r in b.rules:
            if r.id in ids:
                problems.append(f"{f}: rule id '{r.id}' is also in {ids[r.id].name}")
            ids[r.id] = f
        out.baselines.append(b)
    if problems:
        raise BaselineError(problems)
    return out
