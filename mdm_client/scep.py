"""A small SCEP client (RFC 8894) for checking the SCEP server: GetCACaps and GetCACert.

Devices do the enrolment (PKCSOperation) themselves; werne only checks that the server answers and
hands out the CA it expects. One session, a timeout on every call, no retries (a check should say
what it saw). Errors name the operation, URL, status and the server's message.

    MDMError
    └── SCEPError     the SCEP server is unreachable or answered with an error   (exit 3)
"""

from __future__ import annotations

import hashlib

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from core.text import one_line
from mdm_client.errors import SCEPError


class SCEPClient:
    """GetCACaps and GetCACert against one SCEP URL (e.g. https://mdm.example/scep)."""

    def __init__(self, url: str, session: requests.Session | None = None, timeout: float = 10.0,
                 verify: bool | str = True):
        self.url = url
        self.timeout = timeout
        # True: the system's CAs; a path: that CA bundle (e.g. the lab's). Per request, so that
        # REQUESTS_CA_BUNDLE in the environment cannot silently replace it.
        self.verify = verify
        self.session = session or requests.Session()

    def _get(self, operation: str) -> requests.Response:
        what = f"GET {self.url}?operation={operation}"
        try:
            resp = self.session.get(self.url, params={"operation": operation}, verify=self.verify,
                                    timeout=(min(3.05, self.timeout), self.timeout))
        except requests.ConnectionError as e:
            reason = "connection refused" if "refused" in str(e).lower() else e.__class__.__name__
            raise SCEPError(f"{what}: cannot connect ({reason}); is the SCEP server running?") from None
        except requests.Timeout:
            raise SCEPError(f"{what}: no answer within {self.timeout:g} s") from None
        except requests.RequestException as e:
            raise SCEPError(f"{what}: {e.__class__.__name__}") from None
        if resp.status_code != 200:
            raise SCEPError(f"{what}: {resp.status_code}: {one_line(resp.text, 200) or resp.reason}")
        return resp

    def get_ca_caps(self) -> list[str]:
        """The server's capabilities (POSTPKIOperation, SHA-256, AES, Renewal, ...)."""
        return [line.strip() for line in self._get("GetCACaps").text.splitlines() if line.strip()]

    def get_ca_cert(self) -> list[x509.Certificate]:
        """The CA certificate(s): one DER certificate, or a degenerate PKCS#7 with CA and RA."""
        resp = self._get("GetCACert")
        what = f"GET {self.url}?operation=GetCACert"
        ctype = resp.headers.get("content-type", "").split(";")[0].strip()
        try:
            if ctype == "application/x-x509-ca-ra-cert":
                return list(pkcs7.load_der_pkcs7_certificates(resp.content))
            return [x509.load_der_x509_certificate(resp.content)]
        except ValueError:
            raise SCEPError(f"{what}: the answer ({ctype or 'no content type'}) is not a certificate") from None


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
