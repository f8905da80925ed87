"""Issue 13, defect 19 (bridge side): the token view and the tag's ``refresh`` config."""

from __future__ import annotations

import html
import re
import time
from typing import Any

import bridge_sample_settings as sample
import jwt
import orjson
import pytest
from bridge_helpers import RealtimeOverride
from django.contrib.auth.models import User
from django.test import Client

from django_bridge.tokens import token_grant

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN_URL = "/realtime/token/"


def _user(name: str) -> User:
    return User.objects.create_user(name, password="pw")


def _logged_in(user: User) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def _page_config(client: Client, submission: int, ttl: int = 60) -> dict[str, Any]:
    response = client.get(f"/rt-page/{submission}/?ttl={ttl}")
    assert response.status_code == 200
    match = re.search(
        r'<script id="realtime-config" type="application/json">(.*?)</script>',
        response.content.decode(),
    )
    assert match, response.content[:500]
    config: dict[str, Any] = orjson.loads(html.unescape(match.group(1)))
    return config


def _renew(client: Client, refresh: dict[str, str], grant: str | None = None) -> Any:
    return client.post(
        refresh["url"],
        orjson.dumps({"grant": grant if grant is not None else refresh["grant"]}),
        content_type="application/json",
        headers={"X-CSRFToken": refresh["csrf"]},
    )


def test_tag_wires_refresh_and_view_renews_the_same_grant(
    realtime_settings: RealtimeOverride,
) -> None:
    """The page's grant buys a fresh token for the same user, channels and ttl."""
    user = _user("alice")
    client = _logged_in(user)
    config = _page_config(client, 9001, ttl=120)
    refresh = config["refresh"]
    assert refresh["url"] == TOKEN_URL
    response = _renew(client, refresh)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    claims = jwt.decode(body["token"], sample.SECRET, algorithms=["HS256"])
    assert claims["sub"] == str(user.pk)
    assert claims["channels"] == ["submission:9001", f"user:{user.pk}"]
    assert claims["exp"] == body["expires"]
    assert 110 <= claims["exp"] - time.time() <= 121


def test_anonymous_page_has_no_refresh_and_view_refuses(
    realtime_settings: RealtimeOverride,
) -> None:
    """No login, no renewal: the tag omits ``refresh`` and the view answers 403."""
    client = Client(enforce_csrf_checks=True)
    assert _page_config(client, 1)["refresh"] is None
    response = client.post(TOKEN_URL, b"{}", content_type="application/json")
    assert response.status_code == 403


def test_view_requires_post_with_csrf(realtime_settings: RealtimeOverride) -> None:
    """GET is not allowed (405) and a POST without the CSRF token is refused (403)."""
    user = _user("bob")
    client = _logged_in(user)
    refresh = _page_config(client, 5)["refresh"]
    assert client.get(TOKEN_URL).status_code == 405
    no_csrf = client.post(
        TOKEN_URL, orjson.dumps({"grant": refresh["grant"]}), content_type="application/json"
    )
    assert no_csrf.status_code == 403
    assert _renew(client, refresh).status_code == 200


def test_grant_of_another_user_or_tampered_is_refused(
    realtime_settings: RealtimeOverride,
) -> None:
    """A grant is bound to its user and its signature."""
    carol, mallory = _user("carol"), _user("mallory")
    client = _logged_in(mallory)
    refresh = _page_config(client, 7)["refresh"]
    carols = token_grant(carol, ["submission:7"], 60)
    assert _renew(client, refresh, grant=carols).status_code == 403
    assert _renew(client, refresh, grant=refresh["grant"][:-2] + "xx").status_code == 400
    assert _renew(client, refresh, grant="").status_code == 400


def test_old_grant_is_refused(realtime_settings: RealtimeOverride) -> None:
    """A grant older than TOKEN_REFRESH_MAX_AGE asks the page to reload (403)."""
    user = _user("dave")
    client = _logged_in(user)
    refresh = _page_config(client, 8)["refresh"]
    realtime_settings.update(TOKEN_REFRESH_MAX_AGE=-1)
    response = _renew(client, refresh)
    assert response.status_code == 403 and "reload" in response.json()["error"]
