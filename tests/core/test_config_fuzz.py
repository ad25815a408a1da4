"""Issue 22: property-based tests (Hypothesis, derandomized) of the config loader. Generated config
files set real settings of every section to hostile values (control characters, line feeds, very
long text, huge numbers, nan, lists and tables where a scalar belongs, deep nesting) or are any text
at all: load_config gives a Config or one ConfigError line, never a traceback. The generated runs
take a few seconds of CPU and are marked slow (`make test`); the deep nesting runs in `make check`."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from core.config import Config, load_config
from core.errors import ConfigError


def fuzz(examples: int) -> settings:
    """Derandomized (the same inputs on every run), no example database, no per-example deadline."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def _sections() -> dict[str, list[str]]:
    out = {}
    for name, field in Config.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            out[name] = list(model.model_fields)
    return out


SECTIONS = _sections()
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40) | st.sampled_from(
    ["", " ", "\n", "a\nb", "\x1b[31m", "\t", "../../etc/passwd", "/", "x" * 5000, "${HOME}", "$(id)",
     "127.0.0.1:99999", "http://a b", "GHP_abcdefghijklmnopqrstuvwxyz0123", "Europe/Berlin", "0.0.0.0/0"])
SCALAR = (TEXT | st.integers(min_value=-2**63, max_value=2**63 - 1) | st.booleans()
          | st.floats(allow_nan=True, allow_infinity=True))
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=3),
                     max_leaves=8)


def toml_value(v: Any) -> str:
    """A TOML value (strings as JSON strings, which TOML's basic strings read alike; tables inline)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


@st.composite
def config_files(draw) -> str:  # type: ignore[no-untyped-def]
    lines = []
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), unique=True, min_size=1, max_size=4)):
        lines.append(f"[{section}]")
        keys = draw(st.lists(st.sampled_from(SECTIONS[section]) | TEXT.filter(bool), unique=True, max_size=4))
        lines += [f"{json.dumps(k)} = {toml_value(draw(VALUE))}" for k in keys]
    return "\n".join(lines) + "\n"


def load(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "werne.toml"
        path.write_text(text, encoding="utf-8")
        try:
            cfg = load_config(path, state_dir=Path(d) / "state")
        except ConfigError as e:
            message = str(e)
            assert message and "\n" not in message and "\r" not in message, repr(message)
            assert "Traceback" not in message
        else:
            assert isinstance(cfg, Config)


@pytest.mark.slow
@fuzz(250)
@given(config_files())
def test_fuzz_settings_of_every_section_load_or_give_one_config_error(text: str) -> None:
    load(text)


@pytest.mark.slow
@fuzz(150)
@given(st.text(max_size=300))
def test_fuzz_any_text_as_a_config_file(text: str) -> None:
    load(text)


@pytest.mark.parametrize("depth", [50, 5000])
def test_deep_nesting_is_one_line(depth: int) -> None:
    load("[site]\nx = " + "[" * depth + "]" * depth + "\n")
    load("[site]\nx = " + "{a = " * depth + "1" + "}" * depth + "\n")
