"""Mirrors the peer's case: a decimal column converted to float, a rewriting type change."""
