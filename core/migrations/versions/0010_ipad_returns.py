"""ipad returns and lost mode: the newest location of an iPad in lost mode (deleted when lost mode
ends), and the iPads erased with Return to Service until they are back in their group

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ipad_lost_mode_locations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("enrollment_id", sa.String(255), nullable=False, unique=True),
        sa.Column("latitude", sa.Float, nullable=False),
        sa.Column("longitude", sa.Float, nullable=False),
        sa.Column("horizontal_accuracy", sa.Float, nullable=True),
        sa.Column("device_timestamp", sa.String(64), nullable=False),
        sa.Column("command_uuid", sa.String(64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ipad_returns",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("serial", sa.String(32), nullable=False),
        sa.Column("enrollment_id", sa.String(255), nullable=False),
        sa.Column("command_uuid", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("pending_commands", sa.JSON, nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ipad_returns_serial", "ipad_returns", ["serial"])


def downgrade() -> None:
    op.drop_table("ipad_returns")
    op.drop_table("ipad_lost_mode_locations")
