"""mdm: drop three indexes that no query uses and every webhook event paid for

ix_mdm_commands_command_uuid repeats the first column of uq_mdm_commands_uuid_id; nothing looks
mdm_webhook_events up by enrollment_id, and events_since reads it by id (a rowid range), so the
topic index is not needed either. Each one cost a random B-tree page write per stored result.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_mdm_commands_command_uuid", table_name="mdm_commands")
    op.drop_index("ix_mdm_webhook_events_topic", table_name="mdm_webhook_events")
    op.drop_index("ix_mdm_webhook_events_enrollment_id", table_name="mdm_webhook_events")


def downgrade() -> None:
    op.create_index("ix_mdm_webhook_events_enrollment_id", "mdm_webhook_events", ["enrollment_id"])
    op.create_index("ix_mdm_webhook_events_topic", "mdm_webhook_events", ["topic"])
    op.create_index("ix_mdm_commands_command_uuid", "mdm_commands", ["command_uuid"])
