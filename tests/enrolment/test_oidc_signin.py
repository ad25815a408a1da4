"""Sign-in through a real OpenID Connect provider (django-oidc-provider, a throwaway one) against
`werne web serve`: code flow with PKCE, state and nonce; the ID token's signature, issuer and audience
checked; the groups claim maps to teacher of one school. A forged state, a provider that names
another issuer, and a user in no mapped group are refused and recorded."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from lab.processes import free_port
from tests.fixtures.enrolment import make_site, start_web
from tests.fixtures.oidc import PASSWORD

pytestmark = [pytest.mark.oidc, pytest.mark.slow]


def provider_login(s: requests.Session, authorize_url: str, username: str, werne: str) -> requests.Response:
    """Follow the provider's login page as a browser would; returns the redirect back to werne."""
    r = s.get(authorize_url, timeout=30)  # -> the provider's login form (redirects followed)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.text)
    assert token, r.text[:500]
    nxt = re.search(r'name="next" value="([^"]*)"', r.text)
    back = s.post(r.url, data={"csrfmiddlewaretoken": token.group(1), "username": username, "password": PASSWORD,
                               "next": html.unescape(nxt.group(1)) if nxt else ""},
                  headers={"Referer": r.url}, timeout=30, allow_redirects=False)
    while back.status_code in (301, 302, 303) and not back.headers["location"].startswith(werne):
        back = s.get(requests.compat.urljoin(back.url, back.headers["location"]), timeout=30, allow_redirects=False)
    return back


def test_teachers_sign_in_through_the_schools_identity_provider(tmp_path: Path, oidc_provider_factory) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    werne = f"http://127.0.0.1:{port}"
    provider = oidc_provider_factory(werne + "/login/oidc/callback")
    site = make_site(tmp_path / "site", extra=provider.toml(werne + "/login/oidc/callback"))
    server = start_web(site, port)
    try:
        base = server.url
        s = requests.Session()
        assert "Mit dem Schulkonto anmelden" in s.get(base + "/login", timeout=10).text
        start = s.get(base + "/login/oidc", timeout=10, allow_redirects=False)
        assert start.status_code == 303
        auth = start.headers["location"]
        q = parse_qs(urlsplit(auth).query)
        assert auth.startswith(provider.issuer)
        assert q["code_challenge_method"] == ["S256"] and q["code_challenge"][0] and q["nonce"][0] and q["state"][0]
        assert "code_verifier" not in q  # the verifier never leaves werne
        back = provider_login(s, auth, "mmeier", werne)
        assert back.headers["location"].startswith(werne + "/login/oidc/callback?"), back.headers
        cb = s.get(back.headers["location"], timeout=30, allow_redirects=False)
        assert (cb.status_code, cb.headers.get("location")) == (303, "/classes"), cb.text[:300]
        page = s.get(base + "/classes", timeout=10)
        assert 'id="current-user">mmeier<' in page.text and "(Lehrkraft)" in page.text

        # A callback with a state werne did not make: refused.
        s2 = requests.Session()
        s2.get(base + "/login/oidc", timeout=10, allow_redirects=False)
        forged = s2.get(base + "/login/oidc/callback?state=forged&code=abc", timeout=10, allow_redirects=False)
        assert forged.status_code == 401
        # A replayed callback (the state was used up): refused.
        replay = s.get(back.headers["location"], timeout=30, allow_redirects=False)
        assert replay.status_code == 401
        # A user in no group werne maps: refused.
        s3 = requests.Session()
        auth3 = s3.get(base + "/login/oidc", timeout=10, allow_redirects=False).headers["location"]
        back3 = provider_login(s3, auth3, "nobody", werne)
        refused = s3.get(back3.headers["location"], timeout=30, allow_redirects=False)
        assert refused.status_code == 401
    finally:
        server.stop()
    audit = json.loads(site.cli("audit", "--json").stdout)
    logins = [(e["actor"], e["detail"].get("via")) for e in audit if e["action"] == "web.login"]
    assert logins == [("mmeier", "oidc")]
    refusals = [e["detail"]["reason"] for e in audit if e["action"] == "web.login_refused"]
    assert any("state does not match" in r for r in refusals)
    assert any("no group maps" in r for r in refusals)


def test_a_provider_that_names_another_issuer_is_refused(tmp_path: Path, oidc_provider_factory) -> None:  # type: ignore[no-untyped-def]
    from core.config import OIDCConfig
    from enrolment.oidc import OIDCClient, OIDCError

    provider = oidc_provider_factory("http://127.0.0.1:9/login/oidc/callback")
    cfg = OIDCConfig(issuer=provider.issuer + "-other", client_id="werne",
                     client_secret_file=provider.client_secret_file, redirect_url="http://127.0.0.1:9/cb")
    with pytest.raises(OIDCError):
        OIDCClient(cfg).begin()
    good = OIDCClient(OIDCConfig(issuer=provider.issuer, client_id="werne",
                                 client_secret_file=provider.client_secret_file, redirect_url="http://127.0.0.1:9/cb"))
    # A well-formed ID token with the right issuer, audience and nonce, signed by another key: refused.
    import time

    from joserfc import jwt
    from joserfc.jwk import RSAKey

    forger = RSAKey.generate_key(2048)
    claims = {"iss": provider.issuer, "aud": "werne", "sub": "1", "nonce": "n", "exp": int(time.time()) + 300,
              "iat": int(time.time()), "preferred_username": "mmeier", "groups": ["lehrkraefte-gs-demo"]}
    forged = jwt.encode({"alg": "RS256", "kid": "forged"}, claims, forger)
    with pytest.raises(OIDCError, match="does not hold"):
        good.verify_id_token(forged, "n")
