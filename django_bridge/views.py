"""The token view: a page renews its realtime token before (or when) it expires.

``POST <prefix>/token/`` with the page's signed grant (``{"grant": "..."}``, rendered by the
``realtime_client`` tag) answers ``{"token": "<jwt>", "expires": <unix s>}`` for the
logged-in user, granting exactly the channels the page was rendered with.

Why POST, CSRF-protected, and never cached: the answer is a credential. Minting one changes
nothing on the server, so a forged cross-site request gains nothing by itself (the browser
will not let another site read the answer), but a GET answer could be kept by a browser or
proxy cache, fetched by link prefetchers, and would put the grant in URLs and access logs.
A POST with Django's usual CSRF check (the tag embeds the CSRF token) is never cached or
prefetched, keeps the grant in the body, and is what Django sites already protect.
"""

from __future__ import annotations

import jwt
import orjson
from django.core import signing
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from django_bridge.conf import get_settings
from django_bridge.tokens import read_grant, realtime_token, user_sub


def _refuse(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@never_cache
@require_POST
def token_view(request: HttpRequest) -> HttpResponse:
    """Return a fresh token for the page's grant; 403 unless its user is logged in."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not getattr(user, "is_active", True):
        return _refuse(403, "login required")
    try:
        body = orjson.loads(request.body or b"{}")
    except orjson.JSONDecodeError:
        return _refuse(400, 'the body must be JSON: {"grant": "..."}')
    grant_text = body.get("grant") if isinstance(body, dict) else None
    if not isinstance(grant_text, str) or not grant_text:
        return _refuse(400, "missing grant")
    settings = get_settings()
    try:
        grant = read_grant(grant_text, max_age=settings.token_refresh_max_age)
    except signing.SignatureExpired:
        return _refuse(403, "grant expired: reload the page")
    except signing.BadSignature:
        return _refuse(400, "invalid grant")
    if grant.sub != user_sub(user):
        return _refuse(403, "the grant belongs to another user")
    ttl = grant.ttl if grant.ttl is not None else settings.token_ttl
    token = realtime_token(user, channels=grant.channels, ttl=ttl)
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    return JsonResponse({"token": token, "expires": expires})
