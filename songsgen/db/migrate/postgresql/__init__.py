"""The PostgreSQL database backend songsgen runs on: Django's, with the safe-DDL schema editor."""
