import django.db.models.functions.text
from django.db import migrations, models

import songsgen.db.functions


class Migration(migrations.Migration):
    """The search by the start of a username or email: lower(username) indexed, and the email's case-insensitive
    unique index rebuilt in code-point order (added under a new name before the old one goes, so an email is
    unique throughout)."""

    dependencies = [
        ('accounts', '0002_create_user_event'),
        ('auth', '0012_alter_user_first_name_max_length'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='user',
            index=models.Index(songsgen.db.functions.CodePointOrder(django.db.models.functions.text.Lower('username')),
                               name='accounts_user_username_lower'),
        ),
        migrations.AddConstraint(
            model_name='user',
            constraint=models.UniqueConstraint(
                songsgen.db.functions.CodePointOrder(django.db.models.functions.text.Lower('email')),
                name='accounts_user_email_lower_uniq'),
        ),
        migrations.RemoveConstraint(
            model_name='user',
            name='accounts_user_email_ci_uniq',
        ),
    ]
