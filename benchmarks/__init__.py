"""The benchmark harness behind ``make bench`` (see docs/benchmarks.md).

`run` is the entry point. It prepares a seeded data file (`data`) and runs every case in its own
subprocess (`cases`), each against its own throwaway Postgres database (`services`). Then it
prints and saves a report (`report`).

`seed_baseline` reproduces the seed project's approach, for comparison only. `queue_case` drives
the JetStream ``process`` case, and `soak` holds the long, opt-in memory and latency cases.
"""
