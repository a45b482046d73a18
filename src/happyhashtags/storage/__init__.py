"""Storage: the public schema, its Alembic migrations, and the `Store` that writes counts."""

from happyhashtags.storage.store import Store, TopRow, database_url_for_display

__all__ = ["Store", "TopRow", "database_url_for_display"]
