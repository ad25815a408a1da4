"""The command groups of the `werne` CLI, one module per group, each imported only when its group runs.

`cli.py` holds the root group, the error boundary and the table that names each group's module.
Every line a command prints goes through `commands.render`, which makes outside text terminal-safe.
"""
