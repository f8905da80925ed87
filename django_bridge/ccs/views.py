"""``contests/<id>/scoreboard`` and ``contests/<id>/awards`` as the Contest API serves them.

The documents are computed by the follower and read from Redis as they are, so that a
reload costs one GET. Staff users (``is_staff``) get the full view, everyone else the public
(frozen) one; ``?version=2026-01`` asks for the newer RELTIME times.
"""

from __future__ import annotations

import functools

import orjson
import redis
from django.http import HttpRequest, HttpResponse, JsonResponse

from django_bridge import redis_client
from django_bridge.ccs import scoring
from django_bridge.ccs.settings import ccs_prefix, ccs_redis_url
from django_bridge.ccs.store import ContestStore


@functools.cache
def _client(url: str) -> redis.Redis:
    # one connection pool per URL for the process; sentinel- and cluster-aware
    client: redis.Redis = redis_client.connect(url, redis_client.STANDINGS_TIMEOUT)
    return client


def _store(contest_id: str) -> ContestStore:
    return ContestStore(_client(ccs_redis_url()), contest_id, ccs_prefix())


def _view(request: HttpRequest) -> str:
    user = getattr(request, "user", None)
    return "full" if user is not None and user.is_staff else "public"


def _document(request: HttpRequest, contest_id: str, name: str) -> HttpResponse:
    body = _store(contest_id).doc(f"{name}:{_view(request)}")
    if body is None:
        return JsonResponse(
            {"code": 404, "message": f"contest {contest_id} is not followed"}, status=404
        )
    version = request.GET.get("version", "2023-06")
    if name == "scoreboard" and version != "2023-06":
        body = orjson.dumps(scoring.with_reltimes(orjson.loads(body)))
    response = HttpResponse(body, content_type="application/json")
    response["Cache-Control"] = "no-cache"
    return response


def scoreboard_view(request: HttpRequest, contest_id: str) -> HttpResponse:
    """``GET contests/<id>/scoreboard``: the followed contest's scoreboard."""
    return _document(request, contest_id, "scoreboard")


def awards_view(request: HttpRequest, contest_id: str) -> HttpResponse:
    """``GET contests/<id>/awards``: winner, first to solve, medals (when configured)."""
    return _document(request, contest_id, "awards")
