"""``manage.py seed_demo``: a demo user (demo/demo), a running contest and three problems."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone

from judge.models import Contest, Problem

PROBLEMS = [
    ("A", "Sum of two numbers", "Read a and b, print a + b.", 5),
    ("B", "Shortest paths", "Dijkstra on a graph with up to 2e5 edges.", 8),
    ("C", "Segment tree beats", "Answer range chmin and range sum queries.", 12),
]


class Command(BaseCommand):
    help = "Create the demo user and contest (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        if not users.objects.filter(username="demo").exists():
            users.objects.create_user("demo", password="demo")
        if not Contest.objects.exists():
            now = timezone.now()
            times = {"starts_at": now - timedelta(minutes=5), "ends_at": now + timedelta(hours=5)}
            if hasattr(Contest, "freeze_at"):  # the standings freeze: the last hour
                times["freeze_at"] = now + timedelta(hours=4)
            contest = Contest.objects.create(title="Demo Round", **times)
            for code, title, statement, tests in PROBLEMS:
                Problem.objects.create(
                    contest=contest, code=code, title=title, statement=statement, test_count=tests
                )
        self.stdout.write("demo data ready: log in as demo / demo")
