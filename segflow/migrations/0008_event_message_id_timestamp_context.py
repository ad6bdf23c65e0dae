"""Events get `timestamp` (when it happened), `message_id` (idempotency) and `context`.

Events stored before this migration happened when they arrived: their `timestamp` is their
`created_at`, copied in before the column becomes NOT NULL.
"""

import django.utils.timezone
from django.db import migrations, models

import segflow.fields


class Migration(migrations.Migration):

    dependencies = [
        ('segflow', '0007_exact_ids_without_padding'),
    ]

    operations = [
        migrations.AddField(
            model_name='event',
            name='timestamp',
            field=models.DateTimeField(null=True),
        ),
        migrations.RunSQL(
            "UPDATE events SET timestamp = created_at",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name='event',
            name='timestamp',
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AddField(
            model_name='event',
            name='message_id',
            field=segflow.fields.ExactCharField(blank=True, max_length=255, null=True, unique=True),
        ),
        migrations.AddField(
            model_name='event',
            name='context',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddIndex(
            model_name='event',
            index=models.Index(fields=['user', 'timestamp'], name='events_user_id_f7b1ba_idx'),
        ),
    ]
