"""mdm: iPad registry, newest answers per device, per-device command results, webhook events

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mdm_devices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("enrollment_id", sa.String(255), nullable=False, unique=True),
        sa.Column("udid", sa.String(255), nullable=False),
        sa.Column("serial", sa.String(32)),
        sa.Column("school", sa.String(64)),
        sa.Column("ipad_group", sa.String(16)),
        sa.Column("model", sa.String(64)),
        sa.Column("os_version", sa.String(32)),
        sa.Column("build_version", sa.String(32)),
        sa.Column("device_name", sa.String(255)),
        sa.Column("topic", sa.String(255)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True)),
        sa.Column("checked_out_at", sa.DateTime(timezone=True)),
        sa.Column("last_seen_at", sa.DateTime(timezone=True)),
        sa.Column("token_update_tally", sa.Integer, nullable=False),
        sa.Column("awaiting_configuration", sa.Boolean),
        sa.Column("unlock_token", sa.LargeBinary),
        sa.Column("identity_cert_not_after", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_mdm_devices_udid", "mdm_devices", ["udid"])
    op.create_index("ix_mdm_devices_serial", "mdm_devices", ["serial"])
    op.create_index("ix_mdm_devices_school", "mdm_devices", ["school"])
    op.create_table(
        "mdm_device_facts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("enrollment_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("command_uuid", sa.String(64)),
        sa.Column("value", sa.JSON, nullable=False),
        sa.UniqueConstraint("enrollment_id", "kind", name="uq_mdm_device_facts_id_kind"),
    )
    op.create_table(
        "mdm_commands",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("command_uuid", sa.String(64), nullable=False),
        sa.Column("enrollment_id", sa.String(255), nullable=False),
        sa.Column("request_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_now_count", sa.Integer, nullable=False),
        sa.Column("error_chain", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.UniqueConstraint("command_uuid", "enrollment_id", name="uq_mdm_commands_uuid_id"),
    )
    op.create_index("ix_mdm_commands_command_uuid", "mdm_commands", ["command_uuid"])
    op.create_index("ix_mdm_commands_enrollment_id", "mdm_commands", ["enrollment_id"])
    op.create_table(
        "mdm_webhook_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("event_id", sa.String(128), nullable=False, unique=True),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.String(64), nullable=False),
        sa.Column("enrollment_id", sa.String(255), nullable=False),
        sa.Column("command_uuid", sa.String(64)),
        sa.Column("status", sa.String(32)),
        sa.Column("message", sa.Text),
    )
    op.create_index("ix_mdm_webhook_events_topic", "mdm_webhook_events", ["topic"])
    op.create_index("ix_mdm_webhook_events_enrollment_id", "mdm_webhook_events", ["enrollment_id"])


def downgrade() -> None:
    op.drop_table("mdm_webhook_events")
    op.drop_table("mdm_commands")
    op.drop_table("mdm_device_facts")
    op.drop_table("mdm_devices")
