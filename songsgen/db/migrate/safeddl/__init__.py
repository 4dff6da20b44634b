"""PostgreSQL: the statements Django writes for a big table, run in their safe forms (docs/migrations.md)."""
