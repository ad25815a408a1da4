"""Ansible lookup (runs on the controller): decrypt a werne escrow ciphertext with the key file.

`lookup('werne_escrow', ciphertext, key_file=path)` returns the plain text for a module parameter
marked no_log. The extra vars carry only ciphertexts and the key file's path, so no plain secret is
written to ansible-runner's private data dir or artifacts (core.escrow: Fernet, same key format).
On an execution node "the controller" is the node, and the key file is its job's one-job key.
"""

from __future__ import annotations

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = r"""
name: werne_escrow
short_description: decrypt a werne escrow ciphertext (Fernet) with a key file on the controller
options:
  _terms:
    description: the ciphertexts
    required: true
  key_file:
    description: the Fernet key file (mode 0600)
    required: true
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        from cryptography.fernet import Fernet, InvalidToken

        key_file = kwargs.get("key_file")
        if not key_file:
            raise AnsibleError("werne_escrow: key_file is required")
        try:
            with open(key_file, encoding="utf-8") as f:
                fernet = Fernet(f.read().strip().encode())
        except (OSError, ValueError) as e:
            raise AnsibleError(f"werne_escrow: cannot use the key file {key_file}: {type(e).__name__}") from None
        out = []
        for term in terms:
            try:
                out.append(fernet.decrypt(str(term).encode()).decode())
            except InvalidToken:
                raise AnsibleError("werne_escrow: a ciphertext does not decrypt with the key file") from None
        return out
