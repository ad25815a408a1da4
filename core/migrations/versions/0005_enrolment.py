"""enrolment: web users and their schools, enrolment requests with per-serial status, DEP profiles, login attempts

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrol_users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "enrol_user_schools",
        sa.Column("user_id", sa.Integer, sa.ForeignKey("enrol_users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("school_id", sa.String(32), primary_key=True),
    )
    op.create_table(
        "enrol_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("school_id", sa.String(32), nullable=False),
        sa.Column("device_group", sa.String(16), nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("reason", sa.Text),
        sa.Column("profile_uuid", sa.String(64)),
    )
    op.create_index("ix_enrol_requests_school_id", "enrol_requests", ["school_id"])
    op.create_index("ix_enrol_requests_status", "enrol_requests", ["status"])
    op.create_table(
        "enrol_request_serials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("request_id", sa.Integer, sa.ForeignKey("enrol_requests.id", ondelete="CASCADE"), nullable=False),
        sa.Column("serial", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("dep_status", sa.String(16)),
        sa.Column("enrollment_id", sa.String(128)),
        sa.Column("pending_commands", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_enrol_request_serials_request_id", "enrol_request_serials", ["request_id"])
    op.create_index("ix_enrol_request_serials_serial", "enrol_request_serials", ["serial"])
    op.create_table(
        "enrol_dep_profiles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("school_id", sa.String(32), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("profile_uuid", sa.String(64), nullable=False),
        sa.Column("defined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.UniqueConstraint("school_id", "digest"),
    )
    op.create_table(
        "enrol_login_attempts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
    )
    op.create_index("ix_enrol_login_attempts_username", "enrol_login_attempts", ["username"])
    op.create_index("ix_enrol_login_attempts_at", "enrol_login_attempts", ["at"])


def downgrade() -> None:
    op.drop_table("enrol_login_attempts")
    op.drop_table("enrol_dep_profiles")
    op.drop_table("enrol_request_serials")
    op.drop_table("enrol_requests")
    op.drop_table("enrol_user_schools")
    op.drop_table("enrol_users")
