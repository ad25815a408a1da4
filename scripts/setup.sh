#!/usr/bin/env bash
# Installs everything werne needs on a Debian/Ubuntu machine, idempotently:
# Debian packages (lab, VPN, browser), the Python venv, and the Go tools
# (NanoMDM, NanoDEP, scepserver/scepclient, KMFDDM, wireguard-go, pebble, node_exporter) into .tools/bin. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STAMP_DIR="$ROOT/.venv/.stamps"

log() { printf 'setup: %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
APT_PACKAGES=(
  systemd-container debootstrap   # the lab of laptops (systemd-nspawn)
  gpg                             # signs the lab's package source (lab/aptrepo.py)
  systemd                         # systemd-analyze verify for the units in deploy/ (tests)
  openssh-client                  # ssh-keygen for lab keys; ansible's ssh
  wireguard-tools nftables iproute2  # VPN tests: wg, netns, veth
  chromium                        # real browser for the web page and report tests
  postgresql                      # a throwaway PostgreSQL server for the database portability tests
  nginx                           # the HTTPS reverse proxy in front of NanoMDM, scepserver and the web page (lab and production)
  cryptsetup-bin                  # reads an erased lab laptop's LUKS volume from the host (lost-laptop tests)
  debsecan                        # Debian's own vulnerability matcher, the reference for werne's (tests)
  slapd                           # a throwaway LDAP directory for the directory sign-in tests
  sqlite3 procps psmisc git make
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    log "missing Debian packages: ${missing[*]} (run as root, or install them)"; exit 2
  fi
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python venv -----------------------------------------------------------
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
mkdir -p "$STAMP_DIR"
req_hash=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$STAMP_DIR/pip-$req_hash" ]; then
  log "installing Python packages"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev,postgres]"
  rm -f "$STAMP_DIR"/pip-*; touch "$STAMP_DIR/pip-$req_hash"
fi

# --- compliance-trestle: the tests' second, independent reader of werne's OSCAL output ---------
# In a venv of its own: trestle pins paramiko and jinja2 to exact versions that werne's venv must
# not be forced to. 3.12.4 is the newest release on OSCAL 1.1.3, the version BSI's Grundschutz++
# catalogue declares (trestle 4.x and 5.x read OSCAL 1.2.x only).
TRESTLE_SPEC="compliance-trestle==3.12.4"
trestle_stamp=".tools/trestle/.$(printf %s "$TRESTLE_SPEC" | sha256sum | cut -c1-12)"
if [ ! -f "$trestle_stamp" ]; then
  log "installing $TRESTLE_SPEC into .tools/trestle"
  rm -rf .tools/trestle
  "$PY" -m venv .tools/trestle
  .tools/trestle/bin/python -m pip install -q "$TRESTLE_SPEC"
  touch "$trestle_stamp"
fi

# --- a real OpenID Connect provider for the sign-in tests -----------------------------------
# django-oidc-provider (maintained, on PyPI) in a venv of its own: it brings Django, which werne's
# venv does not need. tests/fixtures_oidc.py runs it with a throwaway project and database.
OIDC_SPEC="django-oidc-provider==0.9.0 Django>=5.2,<5.3"
oidc_stamp=".tools/oidc/.$(printf %s "$OIDC_SPEC" | sha256sum | cut -c1-12)"
if [ ! -f "$oidc_stamp" ]; then
  log "installing $OIDC_SPEC into .tools/oidc"
  rm -rf .tools/oidc
  "$PY" -m venv .tools/oidc
  # shellcheck disable=SC2086
  .tools/oidc/bin/python -m pip install -q $OIDC_SPEC
  touch "$oidc_stamp"
fi

# --- Go tools --------------------------------------------------------------
# Versions are pinned here and nowhere else.
GO_TOOLS=(
  "nanomdm github.com/micromdm/nanomdm/cmd/nanomdm@v0.9.0"
  "depserver github.com/micromdm/nanodep/cmd/depserver@v0.7.0"
  # The SCEP server for the iPads' device identities, and its client for the lab's simulated iPads.
  "scepserver github.com/micromdm/scep/v2/cmd/scepserver@v2.3.0"
  "scepclient github.com/micromdm/scep/v2/cmd/scepclient@v2.3.0"
  # The declarative-management server (DDM declarations, sets, status) beside NanoMDM.
  "kmfddm github.com/jessepeterson/kmfddm/cmd/kmfddm@v0.8.3"
  "wireguard golang.zx2c4.com/wireguard@v0.0.0-20260522210424-ecfc5a8d5446"
  # Let's Encrypt's ACME test server: the lab's ACME CA for `server.tls = "acme"` (lab/pebble.py).
  "pebble github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.3"
  # Prometheus' node_exporter: the tests scrape werne's metrics files over HTTP through its textfile
  # collector, the path production takes (tests/core/test_metrics_scrape.py). Needs Go 1.25.
  "node_exporter github.com/prometheus/node_exporter@v1.12.1"
)
mkdir -p .tools/bin
for entry in "${GO_TOOLS[@]}"; do
  name=${entry%% *}; mod=${entry#* }
  stamp=".tools/bin/.$name-$(printf %s "$mod" | sha256sum | cut -c1-12)"
  if [ ! -x ".tools/bin/$name" ] || [ ! -f "$stamp" ]; then
    command -v go >/dev/null || { log "Go is required for $name"; exit 2; }
    log "go install $mod"
    GOBIN="$ROOT/.tools/bin" GOFLAGS=-mod=mod go install "$mod"
    rm -f ".tools/bin/.$name-"*; touch "$stamp"
  fi
done
# wireguard-go's module builds a binary called "wireguard"; wg-quick looks for wireguard-go.
ln -sf wireguard .tools/bin/wireguard-go
log "ready"
