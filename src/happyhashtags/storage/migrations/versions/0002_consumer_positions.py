"""Consumer positions: how far each resumable input is counted, committed with the counts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from happyhashtags.storage.schema import UtcTimestamp

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consumer_positions",
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=True),
        sa.Column("updated_at", UtcTimestamp, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("consumer_positions")
