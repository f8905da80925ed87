"""URLs of the sample project: the example judge's pages, a view that publishes, the bridge's
token view and a page that uses the ``realtime_client`` tag."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.template import RequestContext, Template
from django.urls import include, path

from django_bridge import publish


def publish_view(request: HttpRequest, channel: str) -> HttpResponse:
    """Publish one event inside the request's transaction and answer 200."""
    with transaction.atomic():
        publish(channel, "test.view", {"ok": True})
    return HttpResponse("published")


REALTIME_PAGE = Template(
    """{% load realtime %}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>realtime page</title>
<link rel="icon" href="data:,"></head><body>
{% realtime_client submission mine ttl=ttl %}
<script>
window.log = { events: [], unsubscribed: [], errors: [], connected: 0 };
const cfg = JSON.parse(document.getElementById("realtime-config").textContent);
// "plain": the page passes the tag's token alone; the client finds the renewal info itself
const rt = "{{ style }}" === "plain"
  ? new RealtimeClient(cfg.url, { token: cfg.token })
  : RealtimeClient.fromConfig(cfg);
window.rt = rt;
rt.on("connected", function () { window.log.connected++; });
rt.on("error", function (e) { window.log.errors.push(e); });
rt.on("unsubscribed", function (d) { window.log.unsubscribed.push(d); });
cfg.channels.forEach(function (ch) {
  rt.subscribe(ch, { since: cfg.since[ch], onEvent: function (e) { window.log.events.push(e); } });
});
</script></body></html>"""
)


def realtime_page(request: HttpRequest, submission: int) -> HttpResponse:
    """A page following ``submission:<id>`` and the user's own channel.

    ``?ttl=``: the token's lifetime; ``?style=plain``: build the client from the token alone.
    """
    user_id = request.user.pk if request.user.is_authenticated else 0
    context = {
        "submission": f"submission:{submission}",
        "mine": f"user:{user_id}",
        "ttl": int(request.GET.get("ttl", "60")),
        "style": "plain" if request.GET.get("style") == "plain" else "config",
    }
    return HttpResponse(REALTIME_PAGE.render(RequestContext(request, context)))


urlpatterns = [
    path("publish/<str:channel>/", publish_view),
    path("realtime/", include("django_bridge.urls")),
    path("rt-page/<int:submission>/", realtime_page),
    path("", include("judgesite.urls")),
]
