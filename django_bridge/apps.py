"""Django app config: registers the system checks and the settings-cache reset."""

from __future__ import annotations

from django.apps import AppConfig


class DjangoBridgeConfig(AppConfig):
    name = "django_bridge"
    verbose_name = "Realtime bridge"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_bridge import checks, conf  # noqa: F401  (registers checks and signal)
