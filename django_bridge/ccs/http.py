"""Read a Contest API event feed over HTTP: keep-alives, reconnects, resyncs.

``follow`` connects to ``<base>/contests/<id>/event-feed``, hands every line to a
``Follower`` and reconnects after any break from the last resume point (``since_token``,
or ``since_id`` for a 2020-03 feed). A 400 to a resumed request means the server refused
the token: the follower starts again from the beginning (repeats change nothing). A line
that is not a notification is logged and skipped.
"""

from __future__ import annotations

import base64
import logging
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException

from django_bridge.ccs.feed import FeedError, parse_line
from django_bridge.ccs.follower import Follower

logger = logging.getLogger(__name__)


class FollowError(RuntimeError):
    """The feed cannot be followed (wrong URL, contest or credentials)."""


def feed_url(base: str, contest_id: str, token: str | None, old_dialect: bool) -> str:
    """Return the event-feed URL, resuming after ``token`` when there is one."""
    url = f"{base.rstrip('/')}/contests/{urllib.parse.quote(contest_id)}/event-feed"
    if token is None:
        return url
    name = "since_id" if old_dialect else "since_token"
    return f"{url}?{urllib.parse.urlencode({name: token})}"


def follow(
    base: str,
    follower: Follower,
    *,
    user: str | None = None,
    password: str | None = None,
    stop: threading.Event | None = None,
    read_timeout: float = 300.0,
    max_backoff: float = 30.0,
) -> None:
    """Follow the feed until ``state.end_of_updates`` or ``stop`` is set.

    ``read_timeout`` should exceed the feed's keep-alive period (120 s in the spec).

    Raises:
        FollowError: 401, 403 or 404 (retrying would not help).
    """
    stop = stop or threading.Event()
    headers = {"Accept": "application/x-ndjson"}
    if user is not None:
        pair = f"{user}:{password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    old_dialect = False
    backoff = 0.5
    while not stop.is_set():
        token = follower.state.token
        url = feed_url(base, follower.contest_id, token, old_dialect)
        moved = False  # did this connection bring an event?
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=read_timeout) as response:
                logger.info("following %s", url)
                for line in response:
                    if not line.endswith(b"\n"):
                        logger.warning("feed %s broke in the middle of a line; reconnecting", url)
                        break  # a cut line: resume after the last whole one
                    try:
                        note = parse_line(line)
                    except FeedError as exc:  # the CCS's bug: skipping beats looping on it
                        logger.warning("feed %s: skipped a malformed line (%s)", url, exc)
                        continue
                    if note is None:
                        follower.idle()
                    else:
                        old_dialect = note.dialect == "2020-03"
                        follower.handle(note)
                        moved = True
                    if follower.finished:
                        follower.flush()
                        return
                    if stop.is_set():
                        break
            logger.info("feed %s closed; reconnecting", url)
        except urllib.error.HTTPError as exc:
            if exc.code == 400 and token is not None:
                logger.warning("feed refused resume point %r: resyncing from the start", token)
                follower.forget_token()
                continue
            if exc.code in (401, 403, 404):
                raise FollowError(f"{url}: HTTP {exc.code}") from exc
            logger.warning("feed %s: HTTP %s", url, exc.code)
        except (OSError, HTTPException) as exc:  # URLError, timeouts, resets, short reads
            logger.warning("feed %s broke (%s); reconnecting", url, exc)
        follower.idle()
        if moved:
            backoff = 0.5
            continue  # the feed was moving: reconnect at once
        # nothing came through: back off (with jitter) before the next attempt
        stop.wait(backoff * random.uniform(0.5, 1.0))
        backoff = min(max_backoff, backoff * 2)
    follower.idle()


def follow_contest(
    base: str,
    contest_id: str,
    *,
    user: str | None = None,
    password: str | None = None,
    medals: tuple[int, int, int] | None = None,
    stop: threading.Event | None = None,
    read_timeout: float = 300.0,
) -> Follower:
    """Follow a contest with the site's settings (the function behind the command).

    The state, the leaderboard and the served documents live in the leaderboard's Redis
    (``REALTIME['LEADERBOARD_REDIS_URL']``, ``LEADERBOARD_PREFIX``, ``CCS_PREFIX``); events
    go out through ``django_bridge.publish``. Returns the follower after
    ``state.end_of_updates`` or ``stop``.

    Raises:
        FollowError: the feed answered 401, 403 or 404.
    """
    from django_bridge.ccs.settings import ccs_prefix, ccs_redis
    from django_bridge.ccs.store import ContestStore
    from django_bridge.conf import raw_settings
    from django_bridge.leaderboard import Leaderboard

    client = ccs_redis()
    lb_prefix = str(raw_settings().get("LEADERBOARD_PREFIX") or "lb:")
    follower = Follower(
        contest_id,
        ContestStore(client, contest_id, ccs_prefix()),
        Leaderboard(client, prefix=lb_prefix),
        medals=medals,
    )
    follow(base, follower, user=user, password=password, stop=stop, read_timeout=read_timeout)
    return follower
