"""The review queue's order (review_items.due_at) and reviewer accounts (users, sessions).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

AGE_SCALE_S = 3600  # finesieve.serve.queue.AGE_SCALE_S when this script was written: one priority point = 1 h


def upgrade() -> None:
    with op.batch_alter_table("review_items") as batch:
        batch.add_column(sa.Column("due_at", sa.DateTime(), nullable=True))
        batch.create_index("ix_review_items_due_at", ["due_at"])
    # Items queued before this revision: due_at = created_at - priority * AGE_SCALE_S, in each database's dialect.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "UPDATE review_items SET due_at = "
            f"datetime(created_at, printf('%+.3f seconds', -priority * {AGE_SCALE_S})) WHERE due_at IS NULL"
        )
    else:
        op.execute(
            f"UPDATE review_items SET due_at = created_at - priority * interval '{AGE_SCALE_S} seconds' "
            "WHERE due_at IS NULL"
        )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(200), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("disabled_at", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "sessions",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(200), sa.ForeignKey("users.username", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf_token", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_sessions_username", "sessions", ["username"])
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_sessions_expires_at", table_name="sessions")
    op.drop_index("ix_sessions_username", table_name="sessions")
    op.drop_table("sessions")
    op.drop_table("users")
    with op.batch_alter_table("review_items") as batch:
        batch.drop_index("ix_review_items_due_at")
        batch.drop_column("due_at")
