"""Redis key layout and Lua scripts of the leaderboard store.

Keys of contest ``C`` under prefix ``P`` (default ``lb:``); the braces are a Redis Cluster
hash tag, so that one contest's keys share a slot and the scripts may touch every row::

    P{C}:meta          hash  unfrozen ("1" after unfreeze), v:jury, v:public (snapshot versions)
    P{C}:rank:jury     zset  member = user id, score = -key (live standings, every verdict)
    P{C}:rank:public   zset  the same for the public board (frozen view until unfreeze)
    P{C}:u:<user>      hash  ver (write version), name, a:<problem> (attempts JSON),
                             row:jury, row:public (display rows as JSON, without rank)

``key`` is the rules' exact integer ordering key (higher is better, below 2**53); the zset
stores ``-key`` so that ascending order is best first and equal keys order by user id, and a
row's rank is ``ZCOUNT -inf (score`` + 1 (standard competition ranking: ties share a rank).

The rules live in Python (``leaderboard.py``); the scripts only store what Python computed
and read ranks. ``RECORD_SCRIPT`` is a compare-and-set on the user's ``ver`` so that two
processes recording verdicts for one user cannot lose an update (the loser re-reads and
retries); every other user's row is untouched, which keeps a record O(log n).
"""

from __future__ import annotations

DEFAULT_PREFIX = "lb:"
VIEWS = ("jury", "public")


def contest_base(prefix: str, contest: str) -> str:
    """Return the key stem shared by every key of a contest."""
    return f"{prefix}{{{contest}}}"


def meta_key(prefix: str, contest: str) -> str:
    """Return the contest's meta hash key."""
    return f"{contest_base(prefix, contest)}:meta"


def rank_key(prefix: str, contest: str, view: str) -> str:
    """Return the sorted set of one view (``jury`` or ``public``)."""
    return f"{contest_base(prefix, contest)}:rank:{view}"


def user_prefix(prefix: str, contest: str) -> str:
    """Return the stem of the per-user hashes (the script appends the user id)."""
    return f"{contest_base(prefix, contest)}:u:"


# Shared Lua: append up to ARGV[n] best rows of zset `zkey` with their rows (field `field`
# of each user hash) to `out` as member, score, row triples, preceded by the count.
_TOP_FN = """
local function top(out, zkey, uprefix, field, n)
  local items = redis.call("ZRANGE", zkey, 0, n - 1, "WITHSCORES")
  out[#out + 1] = #items / 2
  for i = 1, #items, 2 do
    out[#out + 1] = items[i]
    out[#out + 1] = items[i + 1]
    out[#out + 1] = redis.call("HGET", uprefix .. items[i], field) or "{}"
  end
end
local function rank(zkey, member)
  local score = redis.call("ZSCORE", zkey, member)
  if not score then return 0 end
  return redis.call("ZCOUNT", zkey, "-inf", "(" .. score) + 1
end
"""

# KEYS: 1 user hash, 2 jury zset, 3 public zset, 4 meta
# ARGV: 1 expected ver, 2 user, 3 attempts field, 4 attempts JSON, 5 jury zscore,
#       6 jury row, 7 public zscore, 8 public row ("" = not on the public board), 9 top n,
#       10 user hash stem, 11 name ("" = keep)
# Returns {0} on a version conflict, else {1, jury changed, public changed, jury rank,
# public rank, jury v, public v (each view's version after this record, changed or not),
# unfrozen, old public position (-1: none), old public zscore ("": none), new public
# position, public board size (the last four only when the public row changed),
# [n, member, score, row ...] for each changed view (jury first)}
RECORD_SCRIPT = (
    _TOP_FN
    + """
local ver = tonumber(redis.call("HGET", KEYS[1], "ver") or "0")
if ver ~= tonumber(ARGV[1]) then return {0} end
local pub_score, pub_row = ARGV[7], ARGV[8]
-- after unfreeze the public board is the jury board (also if it happened since Python read)
local unfrozen = redis.call("HGET", KEYS[4], "unfrozen") == "1"
if unfrozen then pub_score, pub_row = ARGV[5], ARGV[6] end
local jury_changed = redis.call("HGET", KEYS[1], "row:jury") ~= ARGV[6]
-- an empty public row: nothing visible before the freeze, the contestant stays off the board
local pub_changed = pub_row ~= "" and redis.call("HGET", KEYS[1], "row:public") ~= pub_row
redis.call("HSET", KEYS[1], "ver", ver + 1, ARGV[3], ARGV[4], "row:jury", ARGV[6])
if ARGV[11] ~= "" then redis.call("HSET", KEYS[1], "name", ARGV[11]) end
redis.call("ZADD", KEYS[2], ARGV[5], ARGV[2])
-- the public move: old position and score (none for a newcomer), new position, board size
local old_pos, old_score, new_pos, size = -1, "", -1, 0
if pub_changed then
  old_pos = redis.call("ZRANK", KEYS[3], ARGV[2]) or -1
  old_score = redis.call("ZSCORE", KEYS[3], ARGV[2]) or ""
end
if pub_row ~= "" then
  redis.call("HSET", KEYS[1], "row:public", pub_row)
  redis.call("ZADD", KEYS[3], pub_score, ARGV[2])
end
if pub_changed then
  new_pos = redis.call("ZRANK", KEYS[3], ARGV[2])
  size = redis.call("ZCARD", KEYS[3])
end
-- an unchanged view still reports its version: the record is part of the board from there on
local jv = tonumber(redis.call("HGET", KEYS[4], "v:jury") or "0")
local pv = tonumber(redis.call("HGET", KEYS[4], "v:public") or "0")
if jury_changed then jv = redis.call("HINCRBY", KEYS[4], "v:jury", 1) end
if pub_changed then pv = redis.call("HINCRBY", KEYS[4], "v:public", 1) end
local out = {1, jury_changed and 1 or 0, pub_changed and 1 or 0,
  rank(KEYS[2], ARGV[2]), rank(KEYS[3], ARGV[2]), jv, pv, unfrozen and 1 or 0,
  old_pos, old_score, new_pos, size}
local n = tonumber(ARGV[9])
if jury_changed then top(out, KEYS[2], ARGV[10], "row:jury", n) end
if pub_changed then top(out, KEYS[3], ARGV[10], "row:public", n) end
return out
"""
)

# KEYS: 1 meta, 2 jury zset, 3 public zset. ARGV: 1 user hash stem, 2 top n
# Returns {public v, n, member, score, row ...}: the final standings.
UNFREEZE_SCRIPT = (
    _TOP_FN
    + """
redis.call("HSET", KEYS[1], "unfrozen", "1")
if redis.call("EXISTS", KEYS[2]) == 1 then
  redis.call("ZUNIONSTORE", KEYS[3], 1, KEYS[2])
  for _, member in ipairs(redis.call("ZRANGE", KEYS[2], 0, -1)) do
    local k = ARGV[1] .. member
    redis.call("HSET", k, "row:public", redis.call("HGET", k, "row:jury") or "{}")
  end
end
local out = {redis.call("HINCRBY", KEYS[1], "v:public", 1)}
top(out, KEYS[3], ARGV[1], "row:public", tonumber(ARGV[2]))
return out
"""
)

# KEYS: 1 meta, 2 zset. ARGV: 1 user hash stem, 2 view, 3 n
# Returns {v, unfrozen ("1" or ""), n, member, score, row ...}
TOP_SCRIPT = (
    _TOP_FN
    + """
local out = {redis.call("HGET", KEYS[1], "v:" .. ARGV[2]) or "0",
  redis.call("HGET", KEYS[1], "unfrozen") or ""}
top(out, KEYS[2], ARGV[1], "row:" .. ARGV[2], tonumber(ARGV[3]))
return out
"""
)

# KEYS: 1 meta, 2 zset. ARGV: 1 user hash stem, 2 view, 3 first position, 4 count,
# 5 user to centre on ("" = none: use 3 and 4), 6 rows on each side of that user
# Returns {v, unfrozen ("1" or ""), board size, first position (-1: user not on the board),
# rank of the first row (0: no row), n, member, score, row ...}, read in one step so that
# the rows are exactly the board of version v.
RANGE_SCRIPT = """
local out = {redis.call("HGET", KEYS[1], "v:" .. ARGV[2]) or "0",
  redis.call("HGET", KEYS[1], "unfrozen") or "", redis.call("ZCARD", KEYS[2])}
local first, count = tonumber(ARGV[3]), tonumber(ARGV[4])
if ARGV[5] ~= "" then
  local pos = redis.call("ZRANK", KEYS[2], ARGV[5])
  if not pos then
    out[#out + 1] = -1
    out[#out + 1] = 0
    out[#out + 1] = 0
    return out
  end
  local k = tonumber(ARGV[6])
  first = math.max(pos - k, 0)
  count = pos + k + 1 - first
end
local items = {}
if count > 0 then
  items = redis.call("ZRANGE", KEYS[2], first, first + count - 1, "WITHSCORES")
end
out[#out + 1] = first
out[#out + 1] = #items > 0 and redis.call("ZCOUNT", KEYS[2], "-inf", "(" .. items[2]) + 1 or 0
out[#out + 1] = #items / 2
for i = 1, #items, 2 do
  out[#out + 1] = items[i]
  out[#out + 1] = items[i + 1]
  out[#out + 1] = redis.call("HGET", ARGV[1] .. items[i], "row:" .. ARGV[2]) or "{}"
end
return out
"""
