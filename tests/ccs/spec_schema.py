"""The Contest API's scoreboard and awards formats, as JSON Schemas written for these tests.

Written from the specification's text (Contest_API.md "Scoreboard" and "Awards",
JSON_Format.md for the ABSTIME, RELTIME and ID types); none of the specification's own
schema files is copied. ``VERSIONS`` names the two time formats the follower serves:
"2023-06" (integer minutes for times inside a score) and "master" (RELTIME strings, the
newer versions).
"""

from __future__ import annotations

from typing import Any

ABSTIME = {
    "type": "string",
    "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?(Z|[+-]\d\d(:?\d\d)?)$",
}
RELTIME = {"type": "string", "pattern": r"^-?\d+:[0-5]\d:[0-5]\d(\.\d{1,3})?$"}
NONNEGATIVE_RELTIME = {"type": "string", "pattern": r"^\d+:[0-5]\d:[0-5]\d(\.\d{1,3})?$"}
ID = {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$", "maxLength": 36}
MINUTES = {"type": "integer", "minimum": 0}
COUNT = {"type": "integer", "minimum": 0}

STATE = {
    "type": "object",
    "properties": {
        name: {"anyOf": [ABSTIME, {"type": "null"}]}
        for name in ("started", "frozen", "ended", "thawed", "finalized", "end_of_updates")
    },
}


def _scoreboard(time_type: dict[str, Any]) -> dict[str, Any]:
    """A scoreboard whose in-score times (total, solve, score time) are ``time_type``."""
    problem = {
        "type": "object",
        "required": ["problem_id", "num_judged", "num_pending"],
        "properties": {
            "problem_id": ID,
            "num_judged": COUNT,
            "num_pending": COUNT,
            "solved": {"type": "boolean"},
            "score": {"type": "number", "minimum": 0},
            "time": time_type,
            "first_to_solve": {"type": "boolean"},
        },
        # pass-fail contests say solved; score contests give a score
        "anyOf": [{"required": ["solved"]}, {"required": ["score"]}],
        # a solve time only for a solved problem
        "if": {"properties": {"solved": {"const": False}}, "required": ["solved"]},
        "then": {"not": {"required": ["time"]}},
    }
    score = {
        "type": "object",
        "properties": {
            "num_solved": COUNT,
            "total_time": time_type,
            "score": {"type": "number"},
            # score contests: when the score was last improved (none yet: null)
            "time": {"anyOf": [time_type, {"type": "null"}]},
        },
        "oneOf": [
            {"required": ["num_solved", "total_time"], "not": {"required": ["score"]}},
            {"required": ["score"], "not": {"required": ["num_solved"]}},
        ],
    }
    row = {
        "type": "object",
        "required": ["rank", "team_id", "score", "problems"],
        "properties": {
            "rank": {"type": "integer", "minimum": 1},
            "team_id": ID,
            "score": score,
            "problems": {"type": "array", "items": problem},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["time", "contest_time", "state", "rows"],
        "properties": {
            "time": ABSTIME,
            "contest_time": RELTIME,
            "state": STATE,
            "rows": {"type": "array", "items": row},
        },
    }


AWARDS = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "array",
    "items": {
        "type": "object",
        "required": ["id", "citation", "team_ids"],
        "properties": {
            "id": ID,
            "citation": {"type": "string", "minLength": 1},
            "team_ids": {"type": "array", "items": ID, "uniqueItems": True},
        },
    },
}

VERSIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("2023-06", "scoreboard"): _scoreboard(MINUTES),
    ("master", "scoreboard"): _scoreboard(NONNEGATIVE_RELTIME),
    ("2023-06", "awards"): AWARDS,
    ("master", "awards"): AWARDS,
}
