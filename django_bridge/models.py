"""Tables of the bridge: the outbox, the relay lease, and per-channel progress marks."""

from __future__ import annotations

from django.db import models


class OutboxEvent(models.Model):
    """One envelope waiting for the relay (written in the publisher's transaction)."""

    channel = models.CharField(max_length=200)
    type = models.CharField(max_length=200)
    data = models.TextField(help_text="the event's data as JSON text")
    state = models.BooleanField(default=False)
    envelope_id = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["sent_at", "id"], name="django_brid_pending")]

    def __str__(self) -> str:
        return f"{self.channel} {self.type} #{self.pk}"


class RelayLease(models.Model):
    """A row whose lock makes one relay at a time the sender (so events stay in order)."""

    name = models.CharField(max_length=50, primary_key=True)
    holder = models.CharField(max_length=100, blank=True, default="")
    heartbeat = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class ChannelProgress(models.Model):
    """The highest progress rank applied to a channel; ``final`` freezes it until a rejudge.

    ``attempt`` counts judgings (1, then +1 per rejudge) and ``run`` is random per attempt:
    both are part of the events' ids, so a rejudge, or a fresh database that reuses
    submission ids, never repeats an id the server still remembers.
    """

    channel = models.CharField(max_length=200, primary_key=True)
    rank = models.BigIntegerField()
    final = models.BooleanField(default=False)
    attempt = models.PositiveIntegerField(default=1)
    run = models.CharField(max_length=16, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.channel}#{self.attempt}@{self.rank}{' final' if self.final else ''}"
