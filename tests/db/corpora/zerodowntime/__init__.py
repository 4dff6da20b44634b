"""Re-written cases of django-pg-zero-downtime-migrations' tests/apps (MIT), each app named after its case."""
