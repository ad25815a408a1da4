"""The webhook receiver for NanoMDM (`werne mdm serve-webhook`)."""

from ipad.webhook.serve import (
    WEBHOOK_PATH,
    BadEvent,
    WebhookError,
    create_app,
    on_enrolled,
    parse_event,
    serve,
    sign,
)

__all__ = ["WEBHOOK_PATH", "BadEvent", "WebhookError", "create_app", "on_enrolled", "parse_event", "serve", "sign"]
