"""The webhook receiver for NanoMDM (`werne mdm serve-webhook`): a Starlette app run by uvicorn.

NanoMDM POSTs one JSON event per check-in or command report. Each request is checked in this
order, and anything wrong is answered with a 4xx, one log line, and nothing stored:
    body larger than mdm.webhook_max_body             -> 413
    X-Hmac-Signature missing or wrong (key set)       -> 401  (base64 HMAC-SHA256 of the raw body)
    not UTF-8, not JSON, not a NanoMDM event, bad
    base64 or plist in raw_payload                     -> 400
A good event goes to the batch writer, which commits in batches (group commit: each batch is what
arrived while the previous one was written, at most mdm.webhook_batch_max) and only then answers
200. Idle polls (most of the traffic) only move `last_seen_at`: they are answered at once and
written every 2 s, newest per device. For every other event a 200 means "stored" (SQLite WAL,
synchronous=NORMAL: survives a crash of this process; the newest batches can be lost on power
failure). A repeated event_id is answered 200 and changes nothing. NanoMDM does not retry failed
webhooks, so a receiver that is down loses those events; the next `werne ipad query` refreshes
the answers.

Modules: `parse` (validate a body into a ParsedEvent), `write` (the batch writer), `serve` (the
ASGI app and the enrolment hook registry), `supervise` (`serve`: the processes that run the app).

Throughput (issue 4, bench/webhook_ingest.py): `serve` runs one process per core (at most 2) on
SQLite, each with its own SO_REUSEPORT listening socket; each process's writer takes a lock file
beside the database around its batch transaction, so the guarantee above holds unchanged (a 200 is answered
after the commit that stored the event). The writer works in the event loop (no thread, see
BatchWriter), writes rows with core.db.bulk_execute, and checkpoints the WAL once per tick
instead of inside commits. Reports take a fast, equivalent parse (see `fast_plist`,
`_fast_report`); any unusual input goes through plistlib and results.parse_report.

Enrolment hook: `on_enrolled(callback)` registers a function called (in the receiver's event
loop, after the commit; keep it short) with an `EnrolmentEvent` for every stored Authenticate and
TokenUpdate. Another process can instead poll `Registry.events_since(last_id)`.
"""

from ipad.errors import BadEvent, WebhookError
from ipad.webhook.parse import parse_event
from ipad.webhook.serve import WEBHOOK_PATH, create_app, hmac_key, on_enrolled, sign
from ipad.webhook.supervise import parse_listen, serve
from ipad.webhook.write import BatchWriter

__all__ = [
    "WEBHOOK_PATH",
    "BadEvent",
    "BatchWriter",
    "WebhookError",
    "create_app",
    "hmac_key",
    "on_enrolled",
    "parse_event",
    "parse_listen",
    "serve",
    "sign",
]
