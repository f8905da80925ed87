"""The bridge's URLs: the token view (``django_bridge:token``).

Include them with ``path("realtime/", include("django_bridge.urls"))``.
"""

from __future__ import annotations

from django.urls import path

from django_bridge.views import token_view

app_name = "django_bridge"
urlpatterns = [path("token/", token_view, name="token")]
