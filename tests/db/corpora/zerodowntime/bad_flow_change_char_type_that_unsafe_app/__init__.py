"""Mirrors the peer's case: a varchar narrowed (120 to 100), which rewrites and can fail on longer values."""
