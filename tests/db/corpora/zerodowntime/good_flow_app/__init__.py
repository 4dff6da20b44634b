"""Mirrors the first steps of the peer's good_flow_app: a nullable column added, indexed, the index dropped."""
