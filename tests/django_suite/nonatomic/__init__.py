"""A harness-only SQLite backend whose schema editor never opens a transaction of its own."""
