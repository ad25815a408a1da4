"""compliance run timings: compliance_runs gains `timings` (where the run's time went; not hashed)

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: runs stored before this revision have no breakdown. Not part of the run's record
    # hash (compliance.history.canonical_record): how long a run took is no evidence, and the
    # breakdown is written after the hash (the report and the signature come later).
    with op.batch_alter_table("compliance_runs") as batch:
        batch.add_column(sa.Column("timings", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("compliance_runs") as batch:
        batch.drop_column("timings")
