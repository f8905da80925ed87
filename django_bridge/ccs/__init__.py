"""Follow an ICPC Contest API event feed and serve its scoreboard (docs/CONTEST-API.md).

* ``feed``: parse event-feed lines of both dialects (2020-03 and 2022-07 or later).
* ``state``: the latest object per (type, id), whatever the order and repetition.
* ``scoring``: the Contest API scoreboard and awards computed from that state.
* ``follower``: the HTTP reader (reconnects, resyncs) and the mapping to the bridge's
  leaderboard, judge progress and contest channels.
* ``views`` / ``urls``: ``contests/<id>/scoreboard`` and ``contests/<id>/awards``.
"""
