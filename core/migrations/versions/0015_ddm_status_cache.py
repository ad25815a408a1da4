"""ipad_ddm_status: the nightly run's merged declarative status per enrolment (read O(changes))

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ipad_ddm_status",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("enrollment_id", sa.String(255), nullable=False, unique=True),
        sa.Column("newest", sa.String(96), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("items", sa.JSON, nullable=False),
        sa.Column("item_times", sa.JSON, nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ipad_ddm_status")
