"""Simulated iPads that speak Apple's check-in and command protocol to a real NanoMDM over HTTP.

Each device has its own identity certificate (issued by the lab CA), sent as URL-escaped PEM in the
header NanoMDM reads with `-cert-header`. A device enrols (Authenticate, then TokenUpdate with a
push token, PushMagic and UnlockToken), then polls: Idle, run the command NanoMDM hands out, send
the report, take the next command, until the queue is empty. Answers use the keys and types of
Apple's `responsekeys` (data/apple-mdm-schema.json); InstallProfile/RemoveProfile really change
what ProfileList reports, ClearPasscode needs the right UnlockToken, and so on.

Faults per device: offline (never talks), a NotNow streak of K (as if locked before first unlock),
no passcode, an old iPadOS, a profile it refuses to install (InstallProfile answers Error with an
ErrorChain), and an EraseDevice it never answers.

One asyncio loop drives every device over plain HTTP/1.1 keep-alive connections, so 523 devices fit
on two cores. Use it as a library (`Simulator(...).start()`) or as a process:
    python -m lab.ipad_sim --state-dir STATE  (reads STATE/mdm/devices.json and lab.json)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import plistlib
import random
import signal
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("werne.mdm.simulator")

CHECKIN_CT = "application/x-apple-aspen-mdm-checkin"
CURRENT_IPADOS = ("17.6.1", "21G93")
OLD_IPADOS = ("15.7.9", "19H365")
TOPIC = "com.apple.mgmt.External.werne-lab"


@dataclass
class DeviceFaults:
    """What is wrong with one simulated iPad."""

    offline: bool = False
    not_now_streak: int = 0
    no_passcode: bool = False
    old_ipados: bool = False
    # InstallProfile of an identifier ending with this text fails with an ErrorChain.
    refuse_profile: str | None = None
    erase_never_answers: bool = False


@dataclass
class SimDevice:
    """One simulated iPad and its state."""

    serial: str
    udid: str
    cert_pem: str
    model: str = "iPad13,18"
    product_name: str = "iPad13,18"
    name: str = ""
    supervised: bool = True
    faults: DeviceFaults = field(default_factory=DeviceFaults)
    # Runtime state
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    passcode_present: bool = True
    lost_mode: bool = False
    locked_message: str | None = None
    not_now_left: int = 0
    unlock_token: bytes = b""
    enrolled: bool = False
    erased: bool = False
    hung: bool = False
    answered: int = 0
    not_now_sent: int = 0
    cert_der: bytes = b""

    def __post_init__(self) -> None:
        self.passcode_present = not self.faults.no_passcode
        self.not_now_left = self.faults.not_now_streak
        self.unlock_token = hashlib.sha256(b"unlock:" + self.udid.encode()).digest()
        self.name = self.name or f"iPad {self.serial}"
        if not self.cert_der and self.cert_pem:
            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import Encoding

            self.cert_der = x509.load_pem_x509_certificate(self.cert_pem.encode()).public_bytes(Encoding.DER)

    @property
    def os(self) -> tuple[str, str]:
        return OLD_IPADOS if self.faults.old_ipados else CURRENT_IPADOS

    # -- messages --------------------------------------------------------------------------

    def authenticate(self) -> dict[str, Any]:
        # iOS sends no Model, ModelName or DeviceName here (Apple's checkin/authenticate.yaml).
        return {
            "MessageType": "Authenticate",
            "UDID": self.udid,
            "Topic": TOPIC,
            "SerialNumber": self.serial,
            "ProductName": self.product_name,
            "OSVersion": self.os[0],
            "BuildVersion": self.os[1],
        }

    def token_update(self) -> dict[str, Any]:
        return {
            "MessageType": "TokenUpdate",
            "UDID": self.udid,
            "Topic": TOPIC,
            "Token": hashlib.sha256(b"token:" + self.udid.encode()).digest(),
            "PushMagic": str(hashlib.md5(self.udid.encode()).hexdigest()).upper(),  # noqa: S324
            "UnlockToken": self.unlock_token,
            "AwaitingConfiguration": False,
        }

    def execute(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """The report for one command, or None for a command this device never answers."""
        uuid = command.get("CommandUUID", "")
        body = command.get("Command") or {}
        rt = body.get("RequestType", "")
        base = {"UDID": self.udid, "CommandUUID": uuid}
        if self.not_now_left > 0:
            self.not_now_left -= 1
            self.not_now_sent += 1
            return {**base, "Status": "NotNow"}
        handler = getattr(self, f"_do_{rt}", None)
        if handler is None:
            return {
                **base,
                "Status": "Error",
                "ErrorChain": [_err("MCMDMErrorDomain", 12021, f"The request type {rt} is not supported.")],
            }
        out = handler(body)
        if out is None:
            return None
        self.answered += 1
        return {**base, **out}

    # -- commands --------------------------------------------------------------------------

    def _do_DeviceInformation(self, body: dict[str, Any]) -> dict[str, Any]:
        known: dict[str, Any] = {
            "UDID": self.udid,
            "SerialNumber": self.serial,
            "DeviceName": self.name,
            "Model": self.model,
            "ModelName": "iPad",
            "ProductName": self.product_name,
            "OSVersion": self.os[0],
            "BuildVersion": self.os[1],
            "IsSupervised": self.supervised,
            "IsActivationLockEnabled": False,
            "IsDeviceLocatorServiceEnabled": False,
            "IsMDMLostModeEnabled": self.lost_mode,
            "AwaitingConfiguration": False,
            "BatteryLevel": 0.81,
            "DeviceCapacity": 64.0,
            "AvailableDeviceCapacity": 41.5,
            "WiFiMAC": _mac(self.udid, 1),
            "BluetoothMAC": _mac(self.udid, 2),
            "IsMultiUser": False,
            "IsCloudBackupEnabled": False,
            "IsDoNotDisturbInEffect": False,
            "TimeZone": "Europe/Berlin",
            "ModelNumber": "MPQ03FD/A",
            "IsRoaming": False,
        }
        queries = body.get("Queries") or list(known)
        return {"Status": "Acknowledged", "QueryResponses": {q: known[q] for q in queries if q in known}}

    def _do_SecurityInfo(self, _body: dict[str, Any]) -> dict[str, Any]:
        return {
            "Status": "Acknowledged",
            "SecurityInfo": {
                "HardwareEncryptionCaps": 3,
                "PasscodePresent": self.passcode_present,
                "PasscodeCompliant": self.passcode_present,
                "PasscodeCompliantWithProfiles": self.passcode_present,
                "PasscodeLockGracePeriodEnforced": 0,
                "AutoLockTime": 120,
                # On iOS, ManagementStatus has only IsUserEnrollment (Apple's responsekeys).
                "ManagementStatus": {"IsUserEnrollment": False},
            },
        }

    def _do_ProfileList(self, _body: dict[str, Any]) -> dict[str, Any]:
        enrollment = {
            "PayloadIdentifier": "com.werne.lab.mdm",
            "PayloadUUID": _uuid(self.udid + "mdm"),
            "PayloadDisplayName": "MDM-Registrierung",
            "PayloadVersion": 1,
            "PayloadOrganization": "Stadt Werne",
            "PayloadRemovalDisallowed": False,
            "HasRemovalPasscode": False,
            "IsEncrypted": False,
            "IsManaged": False,
            "PayloadContent": [
                {
                    "PayloadType": "com.apple.mdm",
                    "PayloadIdentifier": "com.werne.lab.mdm.mdm",
                    "PayloadUUID": _uuid(self.udid + "mdm-p"),
                    "PayloadVersion": 1,
                }
            ],
        }
        return {"Status": "Acknowledged", "ProfileList": [enrollment, *self.profiles.values()]}

    def _do_CertificateList(self, _body: dict[str, Any]) -> dict[str, Any]:
        return {
            "Status": "Acknowledged",
            "CertificateList": [
                {"CommonName": f"werne-lab {self.serial}", "IsIdentity": True, "Data": self.cert_der}
            ],
        }

    def _do_InstalledApplicationList(self, _body: dict[str, Any]) -> dict[str, Any]:
        apps = [
            ("com.apple.Keynote", "Keynote", "14.1"),
            ("com.apple.Pages", "Pages", "14.1"),
            ("de.westermann.bibox", "BiBox", "3.2.0"),
        ]
        return {
            "Status": "Acknowledged",
            "InstalledApplicationList": [
                {
                    "Identifier": i,
                    "Name": n,
                    "ShortVersion": v,
                    "Version": v,
                    "BundleSize": 150_000_000,
                    "DynamicSize": 2_000_000,
                    "IsValidated": True,
                    "Installing": False,
                }
                for i, n, v in apps
            ],
        }

    def _do_InstallProfile(self, body: dict[str, Any]) -> dict[str, Any]:
        profile = _profile_from_payload(body.get("Payload"))
        if profile is None:
            return {
                "Status": "Error",
                "ErrorChain": [_err("MCProfileErrorDomain", 1000, "The profile could not be read.")],
            }
        ident = profile.get("PayloadIdentifier", "")
        refuse = self.faults.refuse_profile
        if refuse and ident.endswith(refuse):
            return {
                "Status": "Error",
                "ErrorChain": [
                    _err("MCInstallationErrorDomain", 4001, "Profile Installation Failed"),
                    _err("MCPayloadErrorDomain", 2003, "The payload could not be installed."),
                ],
            }
        self.profiles[ident] = {
            "PayloadIdentifier": ident,
            "PayloadUUID": profile.get("PayloadUUID", ""),
            "PayloadDisplayName": profile.get("PayloadDisplayName", ident),
            "PayloadVersion": int(profile.get("PayloadVersion", 1)),
            "PayloadOrganization": profile.get("PayloadOrganization", ""),
            "PayloadRemovalDisallowed": bool(profile.get("PayloadRemovalDisallowed", False)),
            "HasRemovalPasscode": False,
            "IsEncrypted": False,
            "IsManaged": True,
            "PayloadContent": [
                {
                    k: p[k]
                    for k in ("PayloadType", "PayloadIdentifier", "PayloadUUID", "PayloadVersion")
                    if k in p
                }
                for p in profile.get("PayloadContent", [])
                if isinstance(p, dict)
            ],
        }
        if (
            any(
                isinstance(p, dict) and p.get("PayloadType") == "com.apple.mobiledevice.passwordpolicy"
                for p in profile.get("PayloadContent", [])
            )
            and not self.faults.no_passcode
        ):
            self.passcode_present = True
        return {"Status": "Acknowledged"}

    def _do_RemoveProfile(self, body: dict[str, Any]) -> dict[str, Any]:
        ident = body.get("Identifier", "")
        if self.profiles.pop(ident, None) is None:
            return {
                "Status": "Error",
                "ErrorChain": [
                    _err("MCProfileErrorDomain", 1001, f"The profile “{ident}” could not be found.")
                ],
            }
        return {"Status": "Acknowledged"}

    def _do_DeviceLock(self, body: dict[str, Any]) -> dict[str, Any]:
        self.locked_message = body.get("Message") or ""
        return {"Status": "Acknowledged"}

    def _do_EnableLostMode(self, _body: dict[str, Any]) -> dict[str, Any]:
        if not self.supervised:
            return {
                "Status": "Error",
                "ErrorChain": [_err("MCMDMErrorDomain", 12078, "The device is not supervised.")],
            }
        self.lost_mode = True
        return {"Status": "Acknowledged"}

    def _do_DisableLostMode(self, _body: dict[str, Any]) -> dict[str, Any]:
        self.lost_mode = False
        return {"Status": "Acknowledged"}

    def _do_ClearPasscode(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("UnlockToken") != self.unlock_token:
            return {
                "Status": "Error",
                "ErrorChain": [_err("MCMDMErrorDomain", 12024, "The unlock token is invalid.")],
            }
        self.passcode_present = False
        return {"Status": "Acknowledged"}

    def _do_EraseDevice(self, _body: dict[str, Any]) -> dict[str, Any] | None:
        if self.faults.erase_never_answers:
            self.hung = True
            return None
        self.erased = True
        return {"Status": "Acknowledged"}

    def _do_Settings(self, body: dict[str, Any]) -> dict[str, Any]:
        # Apple's responsekeys: one Settings dictionary (Status, ErrorChain) for the whole command.
        errors = []
        for item in body.get("Settings") or []:
            if item.get("Item") == "DeviceName" and self.supervised:
                self.name = str(item.get("DeviceName", self.name))
            else:
                errors.append(
                    _err("MCMDMErrorDomain", 12021, f"Setting {item.get('Item')} is not supported.")
                )
        result: dict[str, Any] = {"Status": "Error" if errors else "Acknowledged"}
        if errors:
            result["ErrorChain"] = errors
        return {"Status": "Acknowledged", "Settings": result}

    def _do_ScheduleOSUpdate(self, body: dict[str, Any]) -> dict[str, Any]:
        updates = body.get("Updates") or [{"InstallAction": "Default"}]
        return {
            "Status": "Acknowledged",
            "UpdateResults": [
                {
                    "ProductKey": f"iOSUpdate{u.get('ProductVersion', CURRENT_IPADOS[0])}",
                    "InstallAction": u.get("InstallAction", "InstallASAP")
                    if u.get("InstallAction") != "Default"
                    else "InstallASAP",
                    "Status": "Idle",
                }
                for u in updates
            ],
        }


def _err(domain: str, code: int, text: str) -> dict[str, Any]:
    return {
        "ErrorDomain": domain,
        "ErrorCode": code,
        "LocalizedDescription": text,
        "USEnglishDescription": text,
    }


def _mac(seed: str, n: int) -> str:
    h = hashlib.sha256(f"{seed}:{n}".encode()).hexdigest()
    return ":".join(h[i : i + 2] for i in range(0, 12, 2))


def _uuid(seed: str) -> str:
    h = hashlib.sha256(seed.encode()).hexdigest().upper()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _profile_from_payload(payload: Any) -> dict[str, Any] | None:
    if not isinstance(payload, bytes):
        return None
    raw = payload
    if not raw.lstrip().startswith(b"<?xml") and not raw.startswith(b"bplist"):
        # CMS-signed: the XML plist is the attached content inside the DER.
        start, end = raw.find(b"<?xml"), raw.rfind(b"</plist>")
        if start < 0 or end < 0:
            return None
        raw = raw[start : end + len(b"</plist>")]
    try:
        data = plistlib.loads(raw)
    except Exception:  # noqa: BLE001 - a bad profile is the device's Error, not a crash
        return None
    return data if isinstance(data, dict) else None


# --- HTTP/1.1 over asyncio streams --------------------------------------------------------------


class _HTTPError(Exception):
    """The MDM server answered a device with a non-2xx status."""


class _Conn:
    """One keep-alive HTTP/1.1 connection to NanoMDM, reopened on failure."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.w is not None:
            self.w.close()
        self.r = self.w = None

    async def put(
        self, path: str, body: bytes, headers: dict[str, str], timeout: float = 15.0
    ) -> tuple[int, bytes]:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        req = (
            f"PUT {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
            f"{head}\r\n"
        ).encode() + body
        for attempt in (0, 1):
            try:
                if self.w is None:
                    self.r, self.w = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port), timeout
                    )
                assert self.r is not None
                self.w.write(req)
                await self.w.drain()
                return await asyncio.wait_for(self._response(), timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _response(self) -> tuple[int, bytes]:
        assert self.r is not None
        head = await self.r.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdrs = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.r.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    await self.r.readuntil(b"\r\n")
                    break
                parts.append(await self.r.readexactly(size))
                await self.r.readexactly(2)
            body = b"".join(parts)
        else:
            body = await self.r.readexactly(int(hdrs.get("content-length", "0")))
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, body


# --- the fleet ---------------------------------------------------------------------------------


class Simulator:
    """Many simulated iPads on one asyncio loop in a background thread (or in the foreground)."""

    def __init__(
        self,
        url: str,
        devices: list[SimDevice],
        cert_header: str,
        poll_interval: float = 2.0,
        path: str = "/mdm",
    ):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.path = path
        self.devices = devices
        self.by_serial = {d.serial: d for d in devices}
        self.cert_header = cert_header
        self.poll_interval = poll_interval
        self.errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._wake: dict[str, asyncio.Event] = {}
        self._ready = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Simulator:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.run()), name="werne-ipad-sim", daemon=True
        )
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=15)

    def wake(self, serials: list[str] | None = None) -> None:
        """Make devices poll now, as an APNs push would (thread-safe)."""
        if self._loop is None:
            return
        for s in serials or list(self._wake):
            ev = self._wake.get(s)
            if ev is not None:
                self._loop.call_soon_threadsafe(ev.set)

    def wait_enrolled(self, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        want = [d for d in self.devices if not d.faults.offline]
        while time.monotonic() < end:
            if all(d.enrolled for d in want):
                return True
            time.sleep(0.05)
        return False

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._wake = {d.serial: asyncio.Event() for d in self.devices}
        self._ready.set()
        tasks = [asyncio.create_task(self._device_loop(d)) for d in self.devices if not d.faults.offline]
        await self._stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- per device ------------------------------------------------------------------------

    def _headers(self, d: SimDevice, checkin: bool) -> dict[str, str]:
        h = {
            self.cert_header: urllib.parse.quote(d.cert_pem, safe=""),
            "Content-Type": CHECKIN_CT if checkin else "application/x-apple-aspen-mdm",
            "User-Agent": "MDM/1.0 werne-simulator",
        }
        return h

    async def _send(self, conn: _Conn, d: SimDevice, msg: dict[str, Any], checkin: bool) -> bytes:
        status, body = await conn.put(self.path, plistlib.dumps(msg), self._headers(d, checkin))
        if status != 200:
            raise _HTTPError(f"{d.serial}: {msg.get('MessageType') or msg.get('Status')}: HTTP {status}")
        return body

    async def _device_loop(self, d: SimDevice) -> None:
        conn = _Conn(self.host, self.port)
        wake = self._wake[d.serial]
        rnd = random.Random(d.udid)
        await asyncio.sleep(rnd.random() * min(self.poll_interval, 1.0))
        try:
            while True:
                try:
                    if not d.enrolled:
                        await self._send(conn, d, d.authenticate(), True)
                        await self._send(conn, d, d.token_update(), True)
                        d.enrolled = True
                    if not await self._poll(conn, d):
                        return
                except _HTTPError as e:
                    # E.g. NanoMDM restarted with in-memory storage and forgot us: enrol again.
                    self.errors += 1
                    d.enrolled = False
                    log.debug("device %s: %s", d.serial, e)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                    self.errors += 1
                    log.debug("device %s: %s", d.serial, e)
                try:
                    await asyncio.wait_for(wake.wait(), self.poll_interval * (0.8 + 0.4 * rnd.random()))
                except TimeoutError:
                    pass
                wake.clear()
        finally:
            conn.close()

    async def _poll(self, conn: _Conn, d: SimDevice) -> bool:
        """One Idle poll and the commands it yields; False when the device stops talking."""
        body = await self._send(conn, d, {"UDID": d.udid, "Status": "Idle"}, False)
        while body:
            command = plistlib.loads(body)
            report = d.execute(command)
            if report is None:
                return False  # e.g. an erase that never answers: the device goes silent
            body = await self._send(conn, d, report, False)
            if d.erased:
                return False
            if report["Status"] == "NotNow":
                break
        return True


# --- devices.json (written by lab.mdm) and the process entry point ----------------------------


def load_devices(path: Path) -> list[SimDevice]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        SimDevice(
            serial=x["serial"],
            udid=x["udid"],
            cert_pem=x["cert_pem"],
            name=x.get("name", ""),
            faults=DeviceFaults(**x.get("faults", {})),
        )
        for x in data["devices"]
    ]


def dump_devices(path: Path, devices: list[SimDevice]) -> None:
    rows = [
        {
            "serial": d.serial,
            "udid": d.udid,
            "cert_pem": d.cert_pem,
            "name": d.name,
            "faults": asdict(d.faults),
        }
        for d in devices
    ]
    path.write_text(json.dumps({"devices": rows}, indent=1), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.ipad_sim", description=__doc__.splitlines()[0])
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--count", type=int, default=None, help="simulate only the first N devices")
    p.add_argument("--poll-interval", type=float, default=None)
    args = p.parse_args(argv)
    mdm_dir = args.state_dir / "mdm"
    lab = json.loads((mdm_dir / "lab.json").read_text(encoding="utf-8"))
    devices = load_devices(mdm_dir / "devices.json")[: args.count]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sim = Simulator(
        lab["nanomdm_url"],
        devices,
        lab["cert_header"],
        args.poll_interval or float(lab.get("poll_interval", 2.0)),
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(sim.run())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: sim._stop.set() if sim._stop else None)
        log.info("simulating %d iPads against %s", len(devices), lab["nanomdm_url"])
        await task

    asyncio.run(run())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
