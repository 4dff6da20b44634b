"""The issue's one-line case (no peer app): a foreign key's only change is null=True."""
