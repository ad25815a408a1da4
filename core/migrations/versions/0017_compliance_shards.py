"""compliance_shards: the shards of a sharded nightly run and their results (issue 26 part 3)

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compliance_shards",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("compliance_runs.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("work", sa.JSON, nullable=False),
        sa.Column("results", sa.JSON, nullable=True),
        sa.Column("devices", sa.JSON, nullable=True),
        sa.Column("timings", sa.JSON, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("run_id", "shard", name="uq_compliance_shards_run_shard"),
    )


def downgrade() -> None:
    op.drop_table("compliance_shards")
