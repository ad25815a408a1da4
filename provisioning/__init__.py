"""Laptop provisioning: the paramiko pre-flight check and the Ansible run through ansible-runner.

`preflight.run_preflight` checks that every selected laptop can be provisioned (reachable, pinned
host key, key login, passwordless sudo, supported OS, python3, free disk); `runner.provision`
runs the baseline playbook, stores the run in the state database and returns a report. Neither
prints: the CLI renders their results.
"""
