"""The online rebuild of SQLite tables (docs/migrations.md, "Online rebuilds")."""
