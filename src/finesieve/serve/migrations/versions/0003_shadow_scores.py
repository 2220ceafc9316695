"""A shadow model's scores beside each message's live decision (messages.shadow_scores).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and without a default: rows decided before this revision, or with no shadow model, stay NULL.
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("shadow_scores", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("shadow_scores")
