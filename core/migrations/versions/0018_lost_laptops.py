"""lost laptops (issue 25): escrowed LUKS recovery keys, pending items keyed by the laptop's host key,
imported security data snapshots and the laptops' package lists

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "laptop_recovery_keys",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("identity", sa.String(128), nullable=True),
        sa.Column("device", sa.String(255), nullable=True),
        sa.Column("keyslot", sa.Integer, nullable=True),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("check_result", sa.String(16), nullable=True),
        sa.Column("check_detail", sa.Text, nullable=True),
    )
    with op.batch_alter_table("laptop_pending") as batch:
        batch.add_column(sa.Column("identity", sa.String(128), nullable=True))
    op.create_table(
        "vuln_snapshots",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("distro", sa.String(16), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("imported_by", sa.String(128), nullable=False),
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("counts", sa.JSON, nullable=False),
    )
    op.create_index("ix_vuln_snapshots_distro", "vuln_snapshots", ["distro"])
    op.create_table(
        "laptop_packages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("packages", sa.JSON, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_laptop_packages_host_sha", "laptop_packages", ["host", "sha256"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_laptop_packages_host_sha", table_name="laptop_packages")
    op.drop_table("laptop_packages")
    op.drop_index("ix_vuln_snapshots_distro", table_name="vuln_snapshots")
    op.drop_table("vuln_snapshots")
    with op.batch_alter_table("laptop_pending") as batch:
        batch.drop_column("identity")
    op.drop_table("laptop_recovery_keys")
