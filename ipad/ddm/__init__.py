"""Declarative device management through KMFDDM: each group's set (`group_sets`), the status the iPads
report (`status`), and enforcing an iPadOS version (`update`, with Apple's catalogue of OS versions
per model in `os_catalogue`)."""
