"""The one place that makes API clients from the configuration; every caller gets its client here.

Endpoints and key files come from the config only (`core.config.load_config`, which also reads the
endpoints file of the state dir, e.g. the one `werne lab up` writes); the keys through
core.secrets (environment variable first, then file).
"""

from __future__ import annotations

from core.config import Config
from core.errors import ConfigError
from core.secrets import read_secret
from mdm_client.appsbooks import AppsBooksClient
from mdm_client.kmfddm import KMFDDMClient
from mdm_client.nanodep import NanoDEPClient
from mdm_client.nanomdm import BACKOFF_S, RETRIES, NanoMDMClient

# NanoMDM's API through nginx's front over several replicas ([mdm] replicas > 1; docs/scale.md).
REPLICA_RETRIES = 6
REPLICA_BACKOFF_S = 0.5


def nanomdm_client(config: Config) -> NanoMDMClient:
    """The NanoMDM API client from the mdm.* settings."""
    mdm = config.mdm
    key = read_secret(file=mdm.api_key_file, env=mdm.api_key_env, what="NanoMDM API key")
    # Behind nginx's API front over several replicas ([mdm] replicas > 1) a replica may be
    # restarting (nginx takes it out for fail_timeout, 10 s) while the others are at max_conns: nginx
    # answers 502. Wait that out: retries after 0, 1, 2, 4, 8 and 16 s (an enqueue after 0.5, 1, 2,
    # 4, 8 and 16 s, while no device answered it: NanoMDMClient.enqueue_chunk). One NanoMDM keeps
    # the client's short retries.
    replicas = mdm.replicas > 1
    return NanoMDMClient(mdm.url, key, timeout=mdm.timeout, max_url_length=mdm.max_url_length,
                         retries=REPLICA_RETRIES if replicas else RETRIES,
                         backoff_factor=REPLICA_BACKOFF_S if replicas else BACKOFF_S)


def nanodep_client(config: Config) -> NanoDEPClient:
    """The NanoDEP client (configuration API and DEP proxy) from the dep.* settings."""
    dep = config.dep
    key = read_secret(file=dep.api_key_file, env=dep.api_key_env, what="NanoDEP API key")
    return NanoDEPClient(dep.url, dep.name, key, dep.timeout)


def kmfddm_client(config: Config) -> KMFDDMClient:
    """The KMFDDM API client (declarative device management) from the ddm.* settings."""
    ddm = config.ddm
    key = read_secret(file=ddm.api_key_file, env=ddm.api_key_env, what="KMFDDM API key")
    return KMFDDMClient(ddm.url, key, timeout=ddm.timeout)


def appsbooks_client(config: Config, location: str) -> AppsBooksClient:
    """The Apps and Books client of one location (apps.locations.<location>), with its token."""
    loc = config.apps.locations.get(location)
    if loc is None:
        known = ", ".join(sorted(config.apps.locations)) or "none configured"
        raise ConfigError(f"unknown Apps and Books location '{location}' (apps.locations: {known})")
    token = read_secret(file=loc.token_file, env=loc.token_env or None,
                        what=f"Apps and Books token of location {location}")
    return AppsBooksClient(config.apps.url, token, location, config.apps.timeout, config.apps.retries)
