"""classroom: the Apple TVs' set-up, the schools' classes for Apple Classroom (devices with a
pseudonym or first name, teachers' logins) and the lessons with their time windows

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "appletv_setup",
        sa.Column("serial", sa.String(32), primary_key=True),
        sa.Column("enrollment_id", sa.String(255), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("airplay_id", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "classroom_classes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("school_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("beacon_id", sa.Integer, nullable=False, unique=True),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("school_id", "name"),
    )
    op.create_index("ix_classroom_classes_school_id", "classroom_classes", ["school_id"])
    op.create_table(
        "classroom_devices",
        sa.Column("class_id", sa.Integer, sa.ForeignKey("classroom_classes.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("serial", sa.String(32), primary_key=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("display_name", sa.String(32), nullable=False),
    )
    op.create_index("ix_classroom_devices_serial", "classroom_devices", ["serial"])
    op.create_table(
        "classroom_teachers",
        sa.Column("class_id", sa.Integer, sa.ForeignKey("classroom_classes.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("username", sa.String(64), primary_key=True),
    )
    op.create_index("ix_classroom_teachers_username", "classroom_teachers", ["username"])
    op.create_table(
        "classroom_lessons",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("class_id", sa.Integer, sa.ForeignKey("classroom_classes.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("school_id", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("apps", sa.JSON, nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("serials", sa.JSON, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    for col in ("class_id", "school_id", "starts_at", "ends_at", "status"):
        op.create_index(f"ix_classroom_lessons_{col}", "classroom_lessons", [col])


def downgrade() -> None:
    op.drop_table("classroom_lessons")
    op.drop_table("classroom_teachers")
    op.drop_table("classroom_devices")
    op.drop_table("classroom_classes")
    op.drop_table("appletv_setup")
