"""vpn: peers, retired public keys, gateway

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vpn_peers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("host", sa.String(255), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("public_key", sa.String(44), unique=True),
        sa.Column("address_v4", sa.String(64), unique=True),
        sa.Column("address_v6", sa.String(64), unique=True),
        sa.Column("last_address_v4", sa.String(64)),
        sa.Column("last_address_v6", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_created_at", sa.DateTime(timezone=True)),
        sa.Column("rotated_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_by", sa.String(128)),
        sa.Column("revocation_reason", sa.Text),
    )
    op.create_index("ix_vpn_peers_status", "vpn_peers", ["status"])
    op.create_table(
        "vpn_retired_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("public_key", sa.String(44), nullable=False, unique=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
    )
    op.create_index("ix_vpn_retired_keys_host", "vpn_retired_keys", ["host"])
    op.create_table(
        "vpn_gateways",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("host", sa.String(255), nullable=False, unique=True),
        sa.Column("public_key", sa.String(44), nullable=False),
        sa.Column("endpoint", sa.String(255), nullable=False),
        sa.Column("config_sha256", sa.String(64), nullable=False),
        sa.Column("peers", sa.Integer, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("vpn_gateways")
    op.drop_table("vpn_retired_keys")
    op.drop_table("vpn_peers")
