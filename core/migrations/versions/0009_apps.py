"""apps: recorded Apps and Books licences, and the escrowed (encrypted) Activation Lock bypass codes

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_licences",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("adam_id", sa.String(32), nullable=False),
        sa.Column("pricing_param", sa.String(16), nullable=False),
        sa.Column("serial", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.UniqueConstraint("location", "adam_id", "serial", name="uq_app_licences_loc_app_serial"),
    )
    op.create_index("ix_app_licences_serial", "app_licences", ["serial"])
    op.create_table(
        "ipad_activation_lock_escrow",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("enrollment_id", sa.String(255), nullable=False, unique=True),
        sa.Column("serial", sa.String(32), nullable=True),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("command_uuid", sa.String(64), nullable=True),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ipad_activation_lock_escrow_serial", "ipad_activation_lock_escrow", ["serial"])


def downgrade() -> None:
    op.drop_table("ipad_activation_lock_escrow")
    op.drop_table("app_licences")
