"""Counts, dead letters and the BI views.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from happyhashtags.storage.schema import UtcTimestamp

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Wilson score interval, lower bound, z = 1.96 (95 %), over n = tweets and p = happy / tweets.
_WILSON = "((p + 1.9208 / n - 1.96 * sqrt((p * (1 - p) + 0.9604 / n) / n)) / (1 + 3.8416 / n))"


def _happiest_sql(least: str) -> str:
    return f"""
CREATE VIEW happiest_hashtags AS
SELECT bucket_start, hashtag, happy_tweets, tweets, happy_ratio, happy_score,
       RANK() OVER (PARTITION BY bucket_start ORDER BY happy_score DESC) AS rank
FROM (
    SELECT bucket_start, hashtag, happy_tweets, tweets,
           CAST(happy_tweets AS DOUBLE PRECISION) / tweets AS happy_ratio,
           {_WILSON} AS happy_score
    FROM (
        SELECT bucket_start, hashtag, happy_tweets, tweets,
               CAST(tweets AS DOUBLE PRECISION) AS n,
               CAST({least}(happy_tweets, tweets) AS DOUBLE PRECISION) / tweets AS p
        FROM hashtag_counts
        WHERE tweets > 0
    ) AS c
) AS s
"""


def upgrade() -> None:
    op.create_table(
        "hashtag_counts",
        sa.Column("bucket_start", UtcTimestamp, nullable=False),
        sa.Column("hashtag", sa.Text, nullable=False),
        sa.Column("tweets", sa.BigInteger, nullable=False),
        sa.Column("happy_tweets", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("bucket_start", "hashtag", name="hashtag_counts_pkey"),
    )
    op.create_index("hashtag_counts_hashtag_idx", "hashtag_counts", ["hashtag", "bucket_start"])
    op.create_table(
        "dead_letters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("received_at", UtcTimestamp, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("raw_length", sa.BigInteger, nullable=False),
    )
    op.create_index("dead_letters_received_at_idx", "dead_letters", ["received_at"])
    op.create_table(
        "pipeline_settings",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    dialect = op.get_bind().dialect.name
    op.execute(_happiest_sql("MIN" if dialect == "sqlite" else "LEAST"))
    if dialect == "sqlite":
        hour = "strftime('%Y-%m-%d %H:00:00', bucket_start)"
    else:
        hour = "date_trunc('hour', bucket_start)"
    op.execute(
        f"""
CREATE VIEW hourly_counts AS
SELECT hashtag, {hour} AS hour, SUM(happy_tweets) AS count
FROM hashtag_counts
GROUP BY hashtag, {hour}
HAVING SUM(happy_tweets) > 0
"""
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS hourly_counts")
    op.execute("DROP VIEW IF EXISTS happiest_hashtags")
    op.drop_table("pipeline_settings")
    op.drop_index("dead_letters_received_at_idx", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_index("hashtag_counts_hashtag_idx", table_name="hashtag_counts")
    op.drop_table("hashtag_counts")
