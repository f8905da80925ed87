"""URLs of the sample project: the example judge's pages plus a view that publishes."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from django_bridge import publish


def publish_view(request: HttpRequest, channel: str) -> HttpResponse:
    """Publish one event inside the request's transaction and answer 200."""
    with transaction.atomic():
        publish(channel, "test.view", {"ok": True})
    return HttpResponse("published")


urlpatterns = [
    path("publish/<str:channel>/", publish_view),
    path("", include("judgesite.urls")),
]
