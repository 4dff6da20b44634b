"""Mirrors the peer's case: a varchar widened (100 to 120), safe forward; its rollback narrows it."""
