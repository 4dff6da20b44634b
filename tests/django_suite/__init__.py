"""Django's own test suites run against our SQLite backend, beside a stock run (`make django-suite`)."""
