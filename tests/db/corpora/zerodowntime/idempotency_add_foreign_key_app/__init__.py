"""Mirrors the peer's case: an integer column becomes a foreign key (AlterField of a ForeignKey), non-atomic."""
