from django.apps import AppConfig


class TransferFixturesConfig(AppConfig):
    """Test-only app: a table with every column type transferdb and dbcompare must carry unchanged."""

    name = "tests.db.transfer_fixtures"
    label = "transfer_fixtures"
    default_auto_field = "django.db.models.BigAutoField"
