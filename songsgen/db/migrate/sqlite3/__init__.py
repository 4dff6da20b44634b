"""The SQLite database backend songsgen runs on: Django's, with the online schema editor."""
