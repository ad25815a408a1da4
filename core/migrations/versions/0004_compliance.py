"""compliance: runs (hash-chained) and per device+rule results

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compliance_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("tool_version", sa.String(32), nullable=False),
        sa.Column("inventory_hash", sa.String(64), nullable=False),
        sa.Column("baselines_hash", sa.String(64), nullable=False),
        sa.Column("waivers_hash", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64)),
        sa.Column("record_hash", sa.String(64), unique=True),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("rules", sa.JSON, nullable=False),
        sa.Column("devices", sa.JSON, nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_compliance_runs_status", "compliance_runs", ["status"])
    op.create_table(
        "compliance_results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("compliance_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("device", sa.String(255), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("waiver", sa.Text),
    )
    op.create_index("ix_compliance_results_run_id", "compliance_results", ["run_id"])
    op.create_index("ix_compliance_results_device_rule", "compliance_results", ["device", "rule_id"])


def downgrade() -> None:
    op.drop_table("compliance_results")
    op.drop_table("compliance_runs")
