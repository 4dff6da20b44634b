from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Owner",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=50)),
            ],
        ),
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("size", models.IntegerField(default=0)),
                ("code", models.CharField(max_length=20, null=True)),
                ("owner", models.ForeignKey(db_constraint=False, db_index=False, on_delete=models.DO_NOTHING,
                                            to="safeddl_fixture.owner")),
            ],
        ),
    ]
