"""audit chain and signed chain heads: audit_events gain prev_hash/record_hash; chain_signatures

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Events written before this revision stay unchained (NULL): they are reported as such, not sealed
    # after the fact, since nothing vouches for them.
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("record_hash", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_audit_events_record_hash", ["record_hash"])
    op.create_table(
        "chain_signatures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("statement", sa.Text, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_chain_signatures_run_id", "chain_signatures", ["run_id"])


def downgrade() -> None:
    op.drop_table("chain_signatures")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_constraint("uq_audit_events_record_hash", type_="unique")
        batch.drop_column("record_hash")
        batch.drop_column("prev_hash")
