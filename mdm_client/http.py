"""The HTTP conventions every API client here shares: one `requests.Session` per client, a timeout
on every call, bounded retries (connection errors and 502/503/504 only, for the methods a client
names), and failures turned into `errors.APIError` subclasses that name method, URL, status and the
server's message (see `Unreachable` for calls that got no answer at all).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from core import jsonio
from mdm_client.errors import Unreachable

RETRY_STATUSES = (502, 503, 504)


def api_session(
    base_url: str,
    session: requests.Session | None = None,
    retries: int = 0,
    retry_methods: Iterable[str] = ("GET", "PUT"),
    pool_maxsize: int = 8,
    backoff_factor: float = 0.2,
) -> requests.Session:
    """The client's session (injected or new), with `retries` bounded retries mounted for base_url.

    Retried: connection errors and 502/503/504, for `retry_methods` only; every other answer is
    returned to the client as it is (a 500 can be a normal, per-device answer), without waiting for
    Retry-After.
    """
    session = session or requests.Session()
    if retries:
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset(retry_methods),
            backoff_factor=backoff_factor,
            raise_on_status=False,
            respect_retry_after_header=False,
        )
        session.mount(base_url.rstrip("/") + "/", HTTPAdapter(max_retries=retry, pool_maxsize=pool_maxsize))
    return session


def mount_connect_retries_only(session: requests.Session, prefix: str, retries: int, pool_maxsize: int = 8,
                               backoff_factor: float = 0.2) -> None:
    """Under `prefix` (more specific than the session's base URL, so it wins), retry only a
    connection that was never made: a request that may have reached the server (a read error, a
    502 from a proxy whose upstream died after taking it) is the client's to decide on."""
    retry = Retry(total=retries, connect=retries, read=False, status=0, other=0,
                  allowed_methods=None, backoff_factor=backoff_factor, raise_on_status=False)
    session.mount(prefix, HTTPAdapter(max_retries=retry, pool_maxsize=pool_maxsize))


def send(session: requests.Session, method: str, url: str, timeout: Any, **kwargs: Any) -> requests.Response:
    """One request with a timeout; raises Unreachable when there is no HTTP answer."""
    try:
        return session.request(method, url, timeout=timeout, **kwargs)
    except requests.ConnectionError as e:
        raise Unreachable("connect", e.__class__.__name__, "refused" in str(e).lower()) from None
    except requests.Timeout as e:
        raise Unreachable("timeout", e.__class__.__name__) from None
    except requests.RequestException as e:
        raise Unreachable("other", e.__class__.__name__) from None


def json_of(resp: requests.Response) -> Any:
    """The answer's JSON (core.jsonio: a ValueError, never a RecursionError, when it is none)."""
    return jsonio.loads(resp.content, f"{resp.request.method if resp.request else 'GET'} {resp.url}")
