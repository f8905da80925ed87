from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="OutboxEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("channel", models.CharField(max_length=200)),
                ("type", models.CharField(max_length=200)),
                ("data", models.TextField(help_text="the event's data as JSON text")),
                ("state", models.BooleanField(default=False)),
                ("envelope_id", models.CharField(max_length=200, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("sent_at", models.DateTimeField(blank=True, null=True)),
                ("error", models.TextField(blank=True, default="")),
            ],
            options={
                "indexes": [models.Index(fields=["sent_at", "id"], name="django_brid_pending")],
            },
        ),
        migrations.CreateModel(
            name="RelayLease",
            fields=[
                ("name", models.CharField(max_length=50, primary_key=True, serialize=False)),
                ("holder", models.CharField(blank=True, default="", max_length=100)),
                ("heartbeat", models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name="ChannelProgress",
            fields=[
                ("channel", models.CharField(max_length=200, primary_key=True, serialize=False)),
                ("rank", models.BigIntegerField()),
                ("final", models.BooleanField(default=False)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
        ),
    ]
