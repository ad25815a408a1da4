"""Metrics for monitoring, as files in Prometheus' text format for node_exporter's textfile
collector (its --collector.textfile.directory points at [metrics] textfile_dir): node_exporter
serves them over HTTP with its own, Prometheus scrapes it. werne runs no metrics server itself.

Each writer owns one file (the nightly run `werne_compliance.prom` and `werne_compliance_status.prom`,
`werne mdm check` `werne_mdm.prom`), replaced atomically: node_exporter never reads half a file.
Metric names never repeat across files (node_exporter refuses a family defined twice).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.config import Config
from core.files import write_output

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass
class Family:
    """One metric family: its name, help, type and samples (label values -> value)."""

    name: str
    help: str
    type: str = "gauge"
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((labels, float(value)))
        return self


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render(families: list[Family]) -> str:
    """The families in the text exposition format (version 0.0.4)."""
    out: list[str] = []
    for f in families:
        if not _NAME.match(f.name) or f.type not in ("gauge", "counter", "untyped"):
            raise ValueError(f"bad metric {f.name!r} of type {f.type!r}")
        out.append(f"# HELP {f.name} {f.help.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}")
        out.append(f"# TYPE {f.name} {f.type}")
        for labels, value in f.samples:
            if any(not _LABEL.match(k) or k.startswith("__") for k in labels):
                raise ValueError(f"bad label name in {f.name}: {sorted(labels)}")
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            out.append(f"{f.name}{{{inner}}} {_number(value)}" if inner else f"{f.name} {_number(value)}")
    return "\n".join(out) + "\n"


def textfile_dir(config: Config) -> Path:
    """Where the metrics files go: [metrics] textfile_dir, else <state_dir>/metrics."""
    return config.metrics.textfile_dir or config.state_dir / "metrics"


def write_textfile(config: Config, name: str, families: list[Family]) -> Path | None:
    """Replace `<textfile_dir>/<name>.prom` with `families` (readable by node_exporter's user);
    None when [metrics] enabled is false. Raises OutputError when the folder cannot be written."""
    if not config.metrics.enabled:
        return None
    path = write_output(textfile_dir(config) / f"{name}.prom", render(families).encode(), mode=0o644, parents=True)
    path.chmod(0o644)  # the units' UMask=0077 took the read bits; node_exporter runs as its own user
    return path
