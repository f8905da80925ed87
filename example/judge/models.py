"""Contests, problems and submissions of the example judge."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Contest(models.Model):
    title = models.CharField(max_length=200)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.title


class Problem(models.Model):
    contest = models.ForeignKey(Contest, on_delete=models.CASCADE, related_name="problems")
    code = models.CharField(max_length=10, help_text="A, B, C, ...")
    title = models.CharField(max_length=200)
    statement = models.TextField(blank=True)
    test_count = models.PositiveIntegerField(default=5)

    class Meta:
        ordering = ["contest", "code"]

    def __str__(self) -> str:
        return f"{self.code}. {self.title}"


class Submission(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        JUDGING = "judging"
        DONE = "done"

    problem = models.ForeignKey(Problem, on_delete=models.CASCADE, related_name="submissions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    language = models.CharField(max_length=20, default="python")
    source = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    verdict = models.CharField(max_length=10, blank=True)
    results = models.JSONField(default=list, blank=True)
    judged_by = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "id"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.problem.code} {self.verdict or self.status}"
