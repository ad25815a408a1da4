"""go-live: the installed APNs push certificates and the ADE enrolment endpoint's requests

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mdm_push_certs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("topic", sa.String(128), nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cert_pem", sa.Text, nullable=False),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("installed_by", sa.String(128), nullable=False),
    )
    op.create_index("ix_mdm_push_certs_topic", "mdm_push_certs", ["topic"])
    op.create_table(
        "enrol_ade_attempts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("udid", sa.String(64), nullable=False),
        sa.Column("product", sa.String(64), nullable=False),
        sa.Column("os_version", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_enrol_ade_attempts_at", "enrol_ade_attempts", ["at"])
    op.create_index("ix_enrol_ade_attempts_serial", "enrol_ade_attempts", ["serial"])


def downgrade() -> None:
    op.drop_table("enrol_ade_attempts")
    op.drop_table("mdm_push_certs")
