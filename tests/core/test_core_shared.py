"""The shared small pieces in core/ that replaced copies: YAML with unique keys, pydantic's first
error, the process check, truncation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from core import yamlio
from core.procs import pid_alive, proc_state
from core.text import truncate
from core.validation import first_error
from core.yamlio import YAMLInputError, load_file, load_text
from tests.fixtures.site import REPO


def test_duplicate_key_refused_with_both_lines() -> None:
    with pytest.raises(YAMLInputError) as e:
        load_text("a: 1\nb:\n  c: 2\n  c: 3\n", "x.yaml")
    assert str(e.value) == "x.yaml:4: duplicate key 'c' (first at line 3)"


def test_duplicate_key_inside_a_list_item_refused() -> None:
    with pytest.raises(YAMLInputError, match=r"x.yaml:3: duplicate key 'k'"):
        load_text("items:\n  - k: 1\n    k: 2\n", "x.yaml")


def test_same_key_in_sibling_mappings_is_fine() -> None:
    assert load_text("- k: 1\n- k: 2\n", "x.yaml") == [{"k": 1}, {"k": 2}]


def test_unsafe_tag_and_empty_document() -> None:
    with pytest.raises(YAMLInputError, match="unsupported YAML tag '!!python/object'"):
        load_text("a: !!python/object {}\n", "x.yaml")
    assert load_text("", "x.yaml") is None


def test_load_file_missing_and_bom(tmp_path: Path) -> None:
    with pytest.raises(YAMLInputError) as e:
        load_file(tmp_path / "nope.yaml")
    assert str(e.value) == f"{tmp_path / 'nope.yaml'}:1: does not exist"
    f = tmp_path / "bom.yaml"
    f.write_bytes("\ufeffa: 1\n".encode())
    assert load_file(f) == {"a": 1}


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int

    @field_validator("n")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be positive")
        return v


def _shape(node: yaml.Node | None) -> object:
    """A composed node as plain data: tag, line and column (what the loaders use), value."""
    if node is None:
        return None
    mark = (node.start_mark.line, node.start_mark.column)
    if isinstance(node, yaml.MappingNode):
        return (node.tag, mark, [(_shape(k), _shape(v)) for k, v in node.value])
    if isinstance(node, yaml.SequenceNode):
        return (node.tag, mark, [_shape(item) for item in node.value])
    return (node.tag, mark, node.value)


BROKEN_YAML = ["a: [1, 2\n", "a: b: c\n", "key: 'open\n", "\tindented: tab\n", "a: \x01\n", "- a\nb: c\n",
               "a: &x 1\nb: *y\n", "%YAML 9.9\n---\na: 1\n"]


def _refusals() -> list[str]:
    out = []
    for text in BROKEN_YAML:
        with pytest.raises(YAMLInputError) as e:
            yamlio.load_text(text, "x.yaml")
        out.append(str(e.value))
    return out


def test_libyaml_composes_every_data_file_as_the_python_parser_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """core.yamlio composes with libyaml (10 times faster); the trees are the same as the pure-Python
    parser's for every YAML file in the repository, and every refusal reads the same."""
    assert yamlio._FAST_LOADER is not None, "PyYAML without libyaml: every YAML file parses 10 times slower"
    files = [f for top in ("compliance", "ipad", "inventories", "playbooks", "deploy", "server")
             for f in (REPO / top).rglob("*.y*ml")]
    assert len(files) > 40
    fast = {f: _shape(yamlio.compose(f.read_text(encoding="utf-8"), f)) for f in files}
    broken_fast = _refusals()
    monkeypatch.setattr(yamlio, "_FAST_LOADER", None)
    assert {f: _shape(yamlio.compose(f.read_text(encoding="utf-8"), f)) for f in files} == fast
    assert _refusals() == broken_fast


def test_first_error_unknown_key_and_value_error() -> None:
    with pytest.raises(ValidationError) as e:
        _M.model_validate({"n": 1, "typo": 2})
    assert first_error(e.value) == "typo: unknown key"
    with pytest.raises(ValidationError) as e:
        _M.model_validate({"n": -1})
    assert first_error(e.value) == "n: must be positive"


def test_pid_alive_start_marker_and_zombie() -> None:
    me = os.getpid()
    st = proc_state(me)
    assert st is not None
    assert pid_alive(me) and pid_alive(me, start=st[1])
    assert not pid_alive(me, start=st[1] + 1)
    assert pid_alive(me, marker="python") and not pid_alive(me, marker="no-such-program-xyz")
    assert not pid_alive(None) and not pid_alive(0)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while proc_state(child.pid) is not None and proc_state(child.pid)[0] not in ("Z", "X"):  # type: ignore[index]
        pass
    assert not pid_alive(child.pid)  # a zombie, not yet reaped, is dead
    child.wait()
    assert not pid_alive(child.pid)


def test_pid_alive_reads_a_command_line_again_while_it_is_empty_mid_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between execve()'s new memory and its arguments /proc/PID/cmdline reads empty: a process
    seen there is read again, not taken for another program (a lab service once showed "not
    running" just after its start that way)."""
    import core.procs

    real = core.procs._read_cmdline
    reads: list[bytes | None] = []

    def mid_exec(pid: int) -> bytes | None:
        raw = b"" if len(reads) < 2 else real(pid)
        reads.append(raw)
        return raw

    monkeypatch.setattr(core.procs, "_read_cmdline", mid_exec)
    assert pid_alive(os.getpid(), marker="python")
    assert len(reads) == 3
    monkeypatch.setattr(core.procs, "_read_cmdline", lambda pid: b"")  # a kernel thread's: always empty
    assert not pid_alive(os.getpid(), marker="python")


def test_truncate() -> None:
    assert truncate("abc", 3) == "abc"
    assert truncate("abcd", 3) == "ab…"
