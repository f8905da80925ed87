"""URLs of the example judge site."""

from importlib.util import find_spec

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from judge import standings, views

urlpatterns = [
    path("", views.index, name="index"),
    path("contest/<int:contest_id>/", views.contest_detail, name="contest"),
    path("contest/<int:contest_id>/standings/", standings.standings_view, name="standings"),
    path(
        "contest/<int:contest_id>/standings/rows",
        standings.standings_rows,
        name="standings-rows",
    ),
    path("problem/<int:problem_id>/", views.problem_detail, name="problem"),
    path("submission/<int:submission_id>/", views.submission_detail, name="submission"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]

# the bridge's token view: pages fetch a fresh token before theirs expires (a contest lasts
# longer than a token). It ships with django_bridge.urls (issue 13, item 19).
if find_spec("django_bridge.urls") is not None:
    urlpatterns.append(path("realtime/", include("django_bridge.urls")))

# a contest judged elsewhere, followed from its Contest API event feed (docs/CONTEST-API.md):
# its live standings page, and its scoreboard/awards in the Contest API's own format
if find_spec("django_bridge.ccs") is not None:
    from judge import followed

    urlpatterns += [
        path("followed/<str:contest_id>/", followed.followed_standings, name="followed"),
        path("api/", include("django_bridge.ccs.urls")),
    ]
