"""tests/golden.py: without the switch a difference fails; with WERNE_UPDATE_GOLDEN=1 a difference
is written and still fails (review first); an unchanged golden file passes either way."""

from __future__ import annotations

import pytest

from tests.golden import UPDATE_ENV, assert_golden


@pytest.fixture
def golden(tmp_path):
    path = tmp_path / "g" / "x.txt"
    path.parent.mkdir()
    path.write_bytes(b"old\n")
    return path


def test_unchanged_passes_with_and_without_the_switch(golden, monkeypatch):
    assert_golden(golden, b"old\n")
    monkeypatch.setenv(UPDATE_ENV, "1")
    assert_golden(golden, b"old\n")


def test_a_difference_fails_and_leaves_the_file(golden, monkeypatch):
    monkeypatch.delenv(UPDATE_ENV, raising=False)
    with pytest.raises(AssertionError, match="x.txt differs from the golden file"):
        assert_golden(golden, b"new\n")
    assert golden.read_bytes() == b"old\n"


def test_with_the_switch_a_difference_is_written_and_still_fails(golden, monkeypatch):
    monkeypatch.setenv(UPDATE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="was rewritten .* review `git diff"):
        assert_golden(golden, b"new\n")
    assert golden.read_bytes() == b"new\n"
    assert_golden(golden, b"new\n")  # the next run, reviewed, passes


def test_a_missing_golden_file_fails_and_with_the_switch_is_created_and_fails(tmp_path, monkeypatch):
    path = tmp_path / "new" / "y.txt"
    monkeypatch.delenv(UPDATE_ENV, raising=False)
    with pytest.raises(AssertionError, match="no golden file"):
        assert_golden(path, b"y\n")
    monkeypatch.setenv(UPDATE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="was created"):
        assert_golden(path, b"y\n")
    assert path.read_bytes() == b"y\n"
