"""Mirrors the peer's case: the code stops using a foreign key (state only), then the table it pointed at is dropped."""
