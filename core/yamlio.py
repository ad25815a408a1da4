"""Turning composed YAML nodes into Python values, with every failure as one `file:line:` line.

The loaders compose first (for line numbers) and construct parts with PyYAML's SafeLoader. A tag
the safe loader does not know (`!vault` from Ansible Vault, `!!python/object`, any custom tag) or a
value its tag cannot take (`!!int abc`, `!!binary` that is not base64) raises a ConstructorError or
a ValueError with a multi-line message, a traceback at the CLI. `construct` makes that a
YAMLInputError naming the file, the line and the tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.errors import InputError

# Tags the safe loader constructs; anything else is refused before construction.
SAFE_TAG_PREFIX = "tag:yaml.org,2002:"
SAFE_TAGS = {
    SAFE_TAG_PREFIX + t
    for t in ("null", "bool", "int", "float", "binary", "timestamp", "omap", "pairs", "set", "str", "seq", "map")
}


class YAMLInputError(InputError):
    """A YAML value cannot be read: an unsupported tag, or a value its tag does not allow."""

    def __init__(self, path: Path | str, line: int, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(f"{path}:{line}: {reason}")


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(SAFE_TAG_PREFIX) :] if tag.startswith(SAFE_TAG_PREFIX) else tag


def _check_tags(node: yaml.Node, path: Path | str) -> None:
    # Iterative: a deeply nested document must not hit Python's recursion limit here.
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.tag not in SAFE_TAGS:
            raise YAMLInputError(path, n.start_mark.line + 1, f"unsupported YAML tag '{_short_tag(n.tag)[:60]}'")
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack += (k, v)
        elif isinstance(n, yaml.SequenceNode):
            stack += n.value


def _failing_line(node: yaml.Node) -> int:
    """The line of the first scalar that does not construct on its own (where a ValueError came from)."""
    stack = [node]
    while stack:
        n = stack.pop(0)
        if isinstance(n, yaml.ScalarNode):
            loader = yaml.SafeLoader("")
            try:
                loader.construct_object(n)
            except Exception:  # noqa: BLE001 - this is the one that fails, whatever it raises
                return n.start_mark.line + 1
            finally:
                loader.dispose()
        elif isinstance(n, yaml.MappingNode):
            stack += [x for kv in n.value for x in kv]
        elif isinstance(n, yaml.SequenceNode):
            stack += n.value
    return node.start_mark.line + 1


def construct(node: yaml.Node, path: Path | str) -> Any:
    """The Python value of a composed node, with the safe loader; raises YAMLInputError."""
    _check_tags(node, path)
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else node.start_mark.line + 1
        raise YAMLInputError(path, line, f"bad YAML value: {str(e.problem or e.context)[:200]}") from None
    except (ValueError, TypeError, OverflowError) as e:
        raise YAMLInputError(path, _failing_line(node), f"bad YAML value: {str(e)[:200]}") from None
    except RecursionError:
        raise YAMLInputError(path, node.start_mark.line + 1, "YAML nested too deeply") from None
    finally:
        loader.dispose()


def scalar_key(node: yaml.Node) -> str | None:
    """A mapping key's text, or None when the key is not a plain scalar (`? [a, b]: ...`)."""
    return str(node.value) if isinstance(node, yaml.ScalarNode) else None


# libyaml's parser (PyYAML's C extension), where PyYAML was built with it: about 10 times faster
# than the pure-Python one on the same documents, and it refuses nesting deeper than 1,000 levels
# itself. The nodes it builds are the same classes with the same line marks.
_FAST_LOADER: type[Any] | None = getattr(yaml, "CSafeLoader", None) if yaml.__with_libyaml__ else None
# For trusted reference data loaded whole (tools/derive_*.py): the fastest safe loader there is.
SAFE_LOADER: type[Any] = _FAST_LOADER or yaml.SafeLoader


def compose(text: str, path: Path | str) -> yaml.Node | None:
    """The node tree of a YAML document (None if empty); every parse failure is a YAMLInputError.

    Composed by libyaml when PyYAML has it; a document libyaml refuses is composed again by the
    pure-Python parser, so that every refusal reads the same with or without libyaml."""
    if _FAST_LOADER is not None:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except (yaml.YAMLError, RecursionError, ValueError):
            pass
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 1
        raise YAMLInputError(path, line, f"broken YAML: {e.problem}") from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise YAMLInputError(path, line, f"broken YAML: character {e.character!r} is not allowed") from None
    except yaml.YAMLError as e:
        raise YAMLInputError(path, 1, f"broken YAML: {str(e).splitlines()[0][:200]}") from None
    except RecursionError:
        raise YAMLInputError(path, 1, "broken YAML: nested too deeply") from None


def _check_unique_keys(node: yaml.Node, path: Path | str) -> None:
    """Refuse a key given twice in one mapping anywhere in the document (PyYAML keeps the last)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in n.value:
                key = scalar_key(k)
                if key is not None:
                    line = k.start_mark.line + 1
                    if key in seen:
                        raise YAMLInputError(path, line, f"duplicate key '{key[:60]}' (first at line {seen[key]})")
                    seen[key] = line
                stack += (k, v)
        elif isinstance(n, yaml.SequenceNode):
            stack += n.value


def load_text(text: str, path: Path | str) -> Any:
    """The value of a YAML document (None if empty): safe tags only, duplicate keys refused.

    Every data file werne reads (profiles, declarations, apps, inventories, baselines) goes
    through here or through `compose`/`construct`, so a key written twice is an error everywhere.
    """
    root = compose(text, path)
    if root is None:
        return None
    _check_unique_keys(root, path)
    return construct(root, path)


def load_file(path: Path) -> Any:
    """`load_text` of a file; a missing or unreadable file is a YAMLInputError naming it (line 1)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise YAMLInputError(path, 1, "does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise YAMLInputError(path, 1, f"cannot read: {e.__class__.__name__}") from None
    return load_text(text, path)
