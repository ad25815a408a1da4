"""identity renewals: the newest renewal of each enrolment's device identity (issue 20)

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mdm_identity_renewals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("enrollment_id", sa.String(255), nullable=False, unique=True),
        sa.Column("serial", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("renewals", sa.Integer, nullable=False),
        sa.Column("command_uuid", sa.String(64), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("old_fingerprint", sa.String(64), nullable=False),
        sa.Column("old_not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_mdm_identity_renewals_serial", "mdm_identity_renewals", ["serial"])


def downgrade() -> None:
    op.drop_table("mdm_identity_renewals")
