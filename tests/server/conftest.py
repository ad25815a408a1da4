"""Fixtures of the server tests (install, deploy write, the server drill, retention): `run_cli` and
`state_dir` come from tests/conftest.py; the drill's lab server is the module fixture `drill` in
test_server_drill_lab.py, built from lab.server's steps (fresh_server, prepare, go_live,
simulated_ipads), which later issues' drills reuse. The retention test stores compliance runs like
the compliance tests."""

# Fixtures used by this folder's tests (imported names are what pytest registers here).
from tests.fixtures.compliance import compliance_config, compliance_db  # noqa: F401
