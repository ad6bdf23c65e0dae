"""Django's admin app, with segflow's site (segflow/admin_site.py) as `admin.site`."""

from django.contrib.admin.apps import AdminConfig


class SegflowAdminConfig(AdminConfig):
    default_site = "segflow.admin_site.SegflowAdminSite"
