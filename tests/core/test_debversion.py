"""core.debversion against the real `dpkg --compare-versions` on many pairs: hand-picked versions
from Debian and Ubuntu security fixes, and random ones built from the characters dpkg treats
specially (~, +, ., -, :, letters, leading zeros). The facts module's own copy is held to the same."""

from __future__ import annotations

import importlib.util
import random
import subprocess
from pathlib import Path

import pytest

from core.debversion import compare, split

HAND = ["1.0", "1.0~rc1", "1.0+deb12u1", "1.0-1", "1.0-1+deb12u1", "1.0-1~bpo12+1", "2:0.9", "1:1.0",
        "6.1.27-1", "6.1.158-1", "1.0a", "1.0.0", "10.0", "9.9", "0.0~git20200101", "3.0.11-1~deb12u2",
        "3.0.15-1~deb12u1", "3.0.8-1", "1.46.5-2ubuntu1.1", "1.46.5-2ubuntu1", "0.9.17-2ubuntu3+esm2",
        "2.1-1.46.5-2ubuntu1.1", "1:2.38.1-5+deb12u1", "1:2.38.1-5+deb12u3", "0", "1.0-0.1", "1.0-0",
        "1.2.3~~", "1.2.3~", "1.2.3~a", "1.2.3", "1.50-1.1", "1.74-1", "7.88.1-10+deb12u8", "7.88.1-10+deb12u12"]


def random_versions(n: int, seed: int = 25) -> list[str]:
    rng = random.Random(seed)
    parts = ["0", "1", "01", "10", "2", "a", "b", "z", "A", "~", "~~", "+", ".", "dfsg", "ubuntu", "deb12u"]
    out = []
    for _ in range(n):
        upstream = rng.choice("0123456789") + "".join(rng.choice(parts) for _ in range(rng.randint(0, 4)))
        v = upstream
        if rng.random() < 0.6:
            v += "-" + rng.choice("0123456789") + "".join(rng.choice(parts) for _ in range(rng.randint(0, 2)))
        if rng.random() < 0.2:
            v = f"{rng.randint(0, 3)}:{v}"
        out.append(v)
    return out


def dpkg_says(pairs: list[tuple[str, str, str]]) -> list[bool]:
    """One shell for all pairs: each line runs `dpkg --compare-versions A OP B` and prints its exit."""
    script = "\n".join(f"dpkg --compare-versions '{a}' {op} '{b}'; echo $?" for a, op, b in pairs)
    out = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, check=True).stdout.split()
    return [x == "0" for x in out]


def word(c: int) -> str:
    return "lt" if c < 0 else "gt" if c > 0 else "eq"


@pytest.fixture(scope="module")
def facts_module():
    path = Path(__file__).resolve().parents[2] / "playbooks/files/werne_facts.py"
    spec = importlib.util.spec_from_file_location("werne_facts_debversion", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_order_matches_dpkg_on_many_pairs(facts_module):
    """Every pair of 235 versions ordered as dpkg orders them, with one dpkg call per version.

    Our order is first shown to be a total preorder (every pair compares as the versions' ranks in
    the sorted list do, ties included). dpkg's order is one too, so agreeing with dpkg on each pair
    of neighbours in that list means agreeing on all 55,000 pairs (transitivity); comparing all of
    them with dpkg directly took one process per pair."""
    from functools import cmp_to_key

    from tests.parts import require_tool

    require_tool("dpkg", hint="the reference for Debian's version order")
    versions = HAND + random_versions(200)
    ordered = sorted(versions, key=cmp_to_key(compare))
    rank = {}
    for i, v in enumerate(ordered):
        rank[v] = rank[ordered[i - 1]] if i and compare(ordered[i - 1], v) == 0 else i
    pairs = [(a, b) for a in versions for b in versions]
    ours = [word(compare(a, b)) for a, b in pairs]
    assert ours == [word(rank[a] - rank[b]) for a, b in pairs], "core.debversion's order is not a total preorder"
    assert len(pairs) > 50_000 and {"lt", "eq", "gt"} <= set(ours)
    neighbours = [(a, word(compare(a, b)), b) for a, b in zip(ordered, ordered[1:], strict=False)]
    assert {op for _, op, _ in neighbours} == {"lt", "eq"}
    verdicts = dpkg_says(neighbours)
    wrong = [f"{a} {op} {b}" for (a, op, b), ok in zip(neighbours, verdicts, strict=True) if not ok]
    assert wrong == [], f"{len(wrong)} pairs where dpkg disagrees, e.g. {wrong[:5]}"
    # The laptop-side copy orders the same way.
    assert [word(facts_module.dpkg_compare_versions(a, b)) for a, b in pairs] == ours


def test_parts_of_a_version():
    assert split("1:2.38.1-5+deb12u1") == (1, "2.38.1", "5+deb12u1")
    assert split("2.1-1.46.5-2ubuntu1.1") == (0, "2.1-1.46.5", "2ubuntu1.1")
    assert split("1.0") == (0, "1.0", "")
    with pytest.raises(ValueError, match="bad epoch"):
        split("x:1.0")
