"""``manage.py realtime_follow_ccs URL --contest ID``: follow a Contest API event feed."""

from __future__ import annotations

from typing import Any

import redis
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_bridge.ccs.http import FollowError, follow_contest


def _medals(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 3 or min(parts) < 0:
        raise ValueError("--medals takes three counts: gold,silver,bronze")
    return parts[0], parts[1], parts[2]


class Command(BaseCommand):
    help = (
        "Follow a contest control system's event feed (ICPC Contest API) into the live "
        "standings, judge progress and contest channels; serve its scoreboard."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("url", help="the API base URL, e.g. https://judge.example/api/v4")
        parser.add_argument("--contest", required=True, help="the contest id in the API")
        parser.add_argument("--user", default=None, help="API account (basic auth)")
        parser.add_argument("--password", default=None, help="its password")
        parser.add_argument(
            "--medals", default=None, help="gold,silver,bronze counts for the awards, e.g. 4,4,4"
        )
        parser.add_argument(
            "--read-timeout",
            type=float,
            default=300.0,
            help="seconds without a byte before reconnecting (keep-alives come every 120 s)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            medals = _medals(options["medals"]) if options["medals"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        try:
            follower = follow_contest(
                options["url"],
                options["contest"],
                user=options["user"],
                password=options["password"],
                medals=medals,
                read_timeout=options["read_timeout"],
            )
        except FollowError as exc:
            raise CommandError(str(exc)) from exc
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            # the state on Redis is consistent (saved after each change): a restart resumes
            raise CommandError(f"Redis failed ({exc}); restart to resume") from exc
        done = "end of updates" if follower.finished else "stopped"
        self.stdout.write(f"contest {options['contest']}: {done}")
