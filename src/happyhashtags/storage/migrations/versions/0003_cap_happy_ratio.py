"""happiest_hashtags: cap happy_ratio at 1, like happy_score and `top`.

With anti-spam sessions a cell can hold more happy posts than posts (an author's first post with a
hashtag in one bucket, their first happy one in the next), so the ratio is taken over
``min(happy_tweets, tweets)``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_WILSON = "((p + 1.9208 / n - 1.96 * sqrt((p * (1 - p) + 0.9604 / n) / n)) / (1 + 3.8416 / n))"


def _view(ratio_numerator: str, least: str) -> str:
    return f"""
CREATE VIEW happiest_hashtags AS
SELECT bucket_start, hashtag, happy_tweets, tweets, happy_ratio, happy_score,
       RANK() OVER (PARTITION BY bucket_start ORDER BY happy_score DESC) AS rank
FROM (
    SELECT bucket_start, hashtag, happy_tweets, tweets,
           CAST({ratio_numerator} AS DOUBLE PRECISION) / tweets AS happy_ratio,
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


def _least() -> str:
    return "MIN" if op.get_bind().dialect.name == "sqlite" else "LEAST"


def upgrade() -> None:
    least = _least()
    op.execute("DROP VIEW happiest_hashtags")
    op.execute(_view(f"{least}(happy_tweets, tweets)", least))


def downgrade() -> None:
    op.execute("DROP VIEW happiest_hashtags")
    op.execute(_view("happy_tweets", _least()))
