"""Sign-in through the schools' identity provider: OpenID Connect authorization code flow with PKCE.

`begin` makes the state, the nonce and the PKCE verifier (kept in the user's signed session, never
in a URL but the challenge) and the provider's authorization URL; `finish` checks the state, trades
the code (with the verifier) for tokens at the provider's token endpoint, and verifies the ID token:
its signature against the provider's published keys, issuer, audience (werne's client id), expiry
and the nonce. The groups claim maps to a role and schools as the directory's groups do
(enrolment.directory.map_groups); the user gets a shadow row ("!oidc") like a directory user.

Endpoints come from the issuer's /.well-known/openid-configuration, whose `issuer` must be the
configured one. Every call has a timeout; errors are one line (OIDCError), never the tokens.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import select

from core import audit
from core.config import OIDCConfig
from core.db import Database
from core.secrets import read_secret
from enrolment.accounts import Principal, credential_tag
from enrolment.directory import map_groups
from enrolment.errors import AuthError, EnrolmentError
from enrolment.models import User, UserSchool

OIDC_HASH = "!oidc"
USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")


class OIDCError(EnrolmentError):
    """The identity provider cannot be used, or its answer does not hold (state, token, claims)."""


@dataclass(frozen=True)
class Pending:
    """What the session keeps between the redirect to the provider and the callback."""

    state: str
    nonce: str
    verifier: str
    started: float

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "nonce": self.nonce, "verifier": self.verifier, "started": self.started}

    @classmethod
    def from_dict(cls, d: Any) -> Pending | None:
        if not isinstance(d, dict):
            return None
        try:
            return cls(str(d["state"]), str(d["nonce"]), str(d["verifier"]), float(d["started"]))
        except (KeyError, TypeError, ValueError):
            return None


# A sign-in must come back within this many seconds.
MAX_PENDING_S = 600


class OIDCClient:
    """One provider: discovery (cached), the authorization URL, the code exchange, the ID token."""

    def __init__(self, cfg: OIDCConfig, session: requests.Session | None = None):
        self.cfg = cfg
        self.http = session or requests.Session()
        if cfg.ca_file:
            self.http.verify = str(cfg.ca_file)
        self._meta: dict[str, Any] | None = None
        self._keys: Any = None

    def _get(self, url: str) -> dict[str, Any]:
        try:
            r = self.http.get(url, timeout=self.cfg.timeout_s)
        except requests.RequestException as e:
            raise OIDCError(f"GET {url}: {e.__class__.__name__}") from None
        if r.status_code != 200:
            raise OIDCError(f"GET {url}: HTTP {r.status_code}")
        try:
            data: dict[str, Any] = r.json()
        except ValueError:
            raise OIDCError(f"GET {url}: not JSON") from None
        return data

    def metadata(self) -> dict[str, Any]:
        if self._meta is None:
            issuer = self.cfg.issuer.rstrip("/")
            meta = self._get(issuer + "/.well-known/openid-configuration")
            if str(meta.get("issuer", "")).rstrip("/") != issuer:
                raise OIDCError(f"the provider names itself {str(meta.get('issuer'))[:80]!r}, not {issuer!r}")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(meta.get(key), str):
                    raise OIDCError(f"the provider's configuration has no {key}")
            self._meta = meta
        return self._meta

    def _client(self) -> Any:
        from authlib.integrations.requests_client import OAuth2Session  # lazy: only OIDC sites need it

        secret = read_secret(file=self.cfg.client_secret_file, env=self.cfg.client_secret_env,
                             what="OpenID Connect client secret")
        s = OAuth2Session(self.cfg.client_id, secret.reveal(), scope=" ".join(self.cfg.scopes),
                          redirect_uri=self.cfg.redirect_url, code_challenge_method="S256",
                          default_timeout=self.cfg.timeout_s)
        if self.cfg.ca_file:
            s.verify = str(self.cfg.ca_file)
        return s

    def begin(self) -> tuple[str, Pending]:
        """The URL to send the browser to, and what the session must keep until it returns."""
        pending = Pending(secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48), time.time())
        url, _state = self._client().create_authorization_url(
            self.metadata()["authorization_endpoint"], state=pending.state, code_verifier=pending.verifier,
            nonce=pending.nonce)
        return str(url), pending

    def finish(self, pending: Pending | None, state: str, code: str) -> dict[str, Any]:
        """The verified ID token's claims for the callback's state and code."""
        if pending is None or not state or not secrets.compare_digest(state, pending.state):
            raise OIDCError("the sign-in's state does not match (an old or forged link)")
        if time.time() - pending.started > MAX_PENDING_S:
            raise OIDCError("the sign-in took too long; please start again")
        if not code:
            raise OIDCError("the provider sent no code")
        try:
            token = self._client().fetch_token(self.metadata()["token_endpoint"], code=code,
                                               code_verifier=pending.verifier, state=state)
        except Exception as e:  # noqa: BLE001 - authlib raises its own and requests' errors; one line each
            raise OIDCError(f"the code was not accepted: {e.__class__.__name__}") from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OIDCError("the provider sent no ID token")
        return self.verify_id_token(id_token, pending.nonce)

    def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """Signature (the provider's keys), issuer, audience, expiry and nonce of an ID token."""
        from joserfc import jwt
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        if self._keys is None:
            self._keys = KeySet.import_key_set(self._get(self.metadata()["jwks_uri"]))  # type: ignore[arg-type]
        try:
            decoded = jwt.decode(id_token, self._keys, algorithms=["RS256", "ES256", "PS256"])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.metadata()["issuer"]},
                aud={"essential": True, "value": self.cfg.client_id},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
                leeway=60,
            ).validate(decoded.claims)
        except (JoseError, ValueError) as e:
            raise OIDCError(f"the ID token does not hold: {e.__class__.__name__}: {str(e)[:120]}") from None
        claims: dict[str, Any] = dict(decoded.claims)
        return claims


def principal_from_claims(db: Database, cfg: OIDCConfig, claims: dict[str, Any], known_schools: set[str]) -> Principal:
    """The signed-in user from the ID token's claims: the login name, the role and schools by the
    groups claim; a shadow row is written. Raises AuthError when no group maps or the name is unusable."""
    username = str(claims.get(cfg.username_claim) or "").strip().lower()[:64]
    if not username or not set(username) <= USERNAME_CHARS:
        raise AuthError("the identity provider's user name is missing or unusable")
    raw = claims.get(cfg.groups_claim) or []
    groups = frozenset(str(g) for g in raw) if isinstance(raw, list) else frozenset()
    mapped = map_groups(groups, cfg.groups, known_schools)
    if mapped is None:
        audit.record(db, "web.login_refused", username, {"reason": "no group maps to a role", "via": "oidc"},
                     actor=username)
        raise AuthError("no group of this account may use the page")
    role, schools = mapped
    with db.session() as s:
        row = s.scalar(select(User).where(User.username == username))
        if row is not None and row.password_hash not in (OIDC_HASH,):
            raise AuthError("this name is a local or directory account; sign in with its password")
        if row is None:
            row = User(username=username, password_hash=OIDC_HASH, role=role, active=True)
            s.add(row)
        elif not row.active:
            raise AuthError("account disabled")
        row.role = role
        row.schools = [UserSchool(school_id=sc) for sc in sorted(schools)]
    return Principal(username, role, schools, credential_tag(OIDC_HASH))
