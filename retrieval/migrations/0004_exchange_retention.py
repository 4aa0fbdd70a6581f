from typing import Any

from django.db import migrations, models


def collections_backfill(apps: Any, schema_editor: Any) -> None:
    """An exchange's collections, from its question's audit row while the trail has it."""
    Exchange = apps.get_model("retrieval", "Exchange")
    AuditEvent = apps.get_model("kb", "AuditEvent")
    exchanges = list(Exchange.objects.values_list("pk", "query_id"))
    for start in range(0, len(exchanges), 500):
        batch = dict(exchanges[start : start + 500])
        rows = AuditEvent.objects.filter(
            action="ask", detail__query_id__in=list(batch.values())
        ).values_list("detail", "collections")
        slugs = {detail["query_id"]: collections for detail, collections in rows}
        for pk, query_id in batch.items():
            if slugs.get(query_id):
                Exchange.objects.filter(pk=pk).update(collections=slugs[query_id])


class Migration(migrations.Migration):
    dependencies = [
        ("kb", "0008_retention"),
        ("retrieval", "0003_evaluation"),
    ]

    operations = [
        migrations.AddField(
            model_name="exchange",
            name="collections",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="exchange",
            name="expired_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(collections_backfill, migrations.RunPython.noop),
    ]
