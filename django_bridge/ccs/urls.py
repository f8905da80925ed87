"""The Contest API URLs: ``path("api/", include("django_bridge.ccs.urls"))`` in a site."""

from __future__ import annotations

from django.urls import path

from django_bridge.ccs.views import awards_view, scoreboard_view

app_name = "ccs"
urlpatterns = [
    path("contests/<str:contest_id>/scoreboard", scoreboard_view, name="scoreboard"),
    path("contests/<str:contest_id>/awards", awards_view, name="awards"),
]
