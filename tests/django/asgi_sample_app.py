"""An ASGI Django app with async views using the bridge (``uvicorn asgi_sample_app:application``).

Views: ``/aio/publish/<channel>/`` (``apublish``), ``/sync/publish/<channel>/`` (the blocking
``publish`` called from an async view: the mistake ``apublish`` exists for), ``/aio/token/``
(``arealtime_token`` of ``request.user`` or ``?sub=``), ``/ping/``.
"""

from __future__ import annotations

from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from django_bridge import apublish, arealtime_token, publish


async def publish_async(request: HttpRequest, channel: str) -> HttpResponse:
    await apublish(channel, "aio.test", {"n": request.GET.get("n")})
    return HttpResponse("published")


async def publish_blocking(request: HttpRequest, channel: str) -> HttpResponse:
    publish(channel, "aio.test", {"n": request.GET.get("n")})
    return HttpResponse("published")


async def token(request: HttpRequest) -> JsonResponse:
    user = request.GET.get("sub") or request.user
    value = await arealtime_token(user, channels=request.GET.getlist("channel"), ttl=600)
    return JsonResponse({"token": value})


async def ping(request: HttpRequest) -> HttpResponse:
    return HttpResponse("pong")


urlpatterns = [
    path("aio/publish/<str:channel>/", publish_async),
    path("sync/publish/<str:channel>/", publish_blocking),
    path("aio/token/", token),
    path("ping/", ping),
]

application = get_asgi_application()
