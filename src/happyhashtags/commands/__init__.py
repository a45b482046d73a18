"""Commands contributed by connectors and services (x-rules, ingest, process, status, ...).

Each module here lists its click commands in ``COMMANDS``; `happyhashtags.cli` registers them all.
Import heavy optional dependencies inside the command functions, not at module level, so that
``happyhashtags --help`` works without them.
"""
