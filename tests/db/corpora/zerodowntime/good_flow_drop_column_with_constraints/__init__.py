"""Mirrors the peer's case: indexes and constraints forgotten by the state, then the columns they cover dropped."""
