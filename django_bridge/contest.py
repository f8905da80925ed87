"""Contest events on ``contest:<id>`` (public channel): status, announcements, anything else."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django_bridge.publishing import publish


def contest_channel(contest_id: int | str) -> str:
    """Return ``contest:<id>``."""
    return f"contest:{contest_id}"


def contest_event(
    contest_id: int | str,
    type_: str,
    data: Any,
    *,
    state: bool = False,
    using: str | None = None,
) -> None:
    """Publish any contest event (``type_`` such as ``contest.clarification``)."""
    publish(contest_channel(contest_id), type_, data, state, using=using)


def contest_status(
    contest_id: int | str,
    status: str,
    *,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    frozen: bool = False,
    using: str | None = None,
) -> None:
    """Publish the contest's status ("upcoming", "running", "frozen", "ended") as its state.

    Times go out as ISO 8601; pages compare them with the server clock from ``welcome.time``.
    """
    contest_event(
        contest_id,
        "contest.status",
        {
            "contest": contest_id,
            "status": status,
            "starts_at": starts_at.isoformat() if starts_at else None,
            "ends_at": ends_at.isoformat() if ends_at else None,
            "frozen": frozen,
        },
        state=True,
        using=using,
    )


def contest_announcement(
    contest_id: int | str, title: str, body: str = "", *, using: str | None = None
) -> None:
    """Publish an announcement to everyone watching the contest."""
    contest_event(
        contest_id,
        "contest.announcement",
        {"contest": contest_id, "title": title, "body": body},
        using=using,
    )
