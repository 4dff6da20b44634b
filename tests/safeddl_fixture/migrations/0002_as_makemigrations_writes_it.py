from django.db import migrations, models


class Migration(migrations.Migration):
    """As makemigrations writes it: a plain index, a CHECK, a unique constraint, NOT NULL on an existing column,
    a foreign key on an existing column, and a new foreign key column (with its index)."""

    dependencies = [("safeddl_fixture", "0001_create_item")]

    operations = [
        migrations.AddIndex(model_name="item", index=models.Index(fields=["name"], name="safeddl_item_name")),
        migrations.AddConstraint(
            model_name="item",
            constraint=models.CheckConstraint(condition=models.Q(size__gte=0), name="safeddl_item_size_positive"),
        ),
        migrations.AddConstraint(
            model_name="item", constraint=models.UniqueConstraint(fields=["code"], name="safeddl_item_code_unique"),
        ),
        migrations.AlterField(model_name="item", name="code", field=models.CharField(max_length=20)),
        migrations.AlterField(
            model_name="item", name="owner",
            field=models.ForeignKey(db_index=False, on_delete=models.DO_NOTHING, to="safeddl_fixture.owner"),
        ),
        migrations.AddField(
            model_name="item", name="reviewer",
            field=models.ForeignKey(null=True, on_delete=models.SET_NULL, related_name="+",
                                    to="safeddl_fixture.owner"),
        ),
    ]
