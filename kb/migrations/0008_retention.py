import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("kb", "0007_usage_prices_budgets"),
    ]

    operations = [
        migrations.AddField(
            model_name="collection",
            name="text_retention_days",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Days the texts of questions and answers over it are kept, in the "
                "audit trail and in conversations; empty: KB_TEXT_RETENTION_DAYS; 0: kept for "
                "good.",
                null=True,
                validators=[django.core.validators.MaxValueValidator(36500)],
            ),
        ),
        migrations.AddField(
            model_name="collection",
            name="legal_hold",
            field=models.BooleanField(
                default=False,
                help_text="Keeps every question and answer text over it, whatever the "
                "retention, until the hold is lifted.",
            ),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="texts_hash",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="texts_expired_by",
            field=models.BigIntegerField(blank=True, null=True),
        ),
    ]
