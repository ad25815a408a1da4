"""enrolment: server-side web sessions, so that logging out ends a session for good

The signed cookie alone stays valid until it expires; the cookie now carries a random session id
whose row is deleted at logout (and when the password is reset or the account disabled). Only the
SHA-256 of the id is stored.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrol_web_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_enrol_web_sessions_username", "enrol_web_sessions", ["username"])


def downgrade() -> None:
    op.drop_table("enrol_web_sessions")
