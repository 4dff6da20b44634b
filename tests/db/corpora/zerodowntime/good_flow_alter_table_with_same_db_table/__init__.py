"""Mirrors the peer's case: a model renamed while its db_table stays, so no SQL runs."""
