from django.db import migrations


def seed(apps, schema_editor):
    from gateway.proxy.routes import seed_routes

    seed_routes(apps.get_model("gateway", "ModelRoute"))


class Migration(migrations.Migration):
    dependencies = [("gateway", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
