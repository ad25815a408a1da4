"""The MDM server as a whole: its layout from the config, the units and nginx site rendered from
deploy/templates (server.deploy), and its installation by one Ansible run (server.install)."""
