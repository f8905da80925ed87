"""Redis key layout and the atomic publish script (shared with the Django bridge).

Keys for channel ``C`` under prefix ``P`` (default ``rt:``); the braces are a Redis Cluster
hash tag so that one channel's keys live in one slot::

    P{C}:meta            hash   epoch, offset, sv (version of the stored state, if versioned)
    P{C}:hist            list   "<published-ms> <event-json>", oldest first, capped
    P{C}:state           string <event-json> of the latest state event
    P{C}:dedup:<id>      string offset of an already published envelope id
    P{C}                 pub/sub channel; message "<epoch> <offset> <published-ms> <event-json>"

One EVALSHA of ``PUBLISH_SCRIPT`` assigns the next offset, appends to history, updates
state and publishes, so that every node and every publisher agree on offsets. A publisher
in another language runs the same script (see docs/PROTOCOL-REDIS.md).
"""

from __future__ import annotations

import secrets

from realtime.envelope import Envelope

DEFAULT_PREFIX = "rt:"


def channel_keys(prefix: str, channel: str) -> tuple[str, str, str]:
    """Return the (meta, history, state) keys of a channel."""
    base = f"{prefix}{{{channel}}}"
    return f"{base}:meta", f"{base}:hist", f"{base}:state"


def pubsub_channel(prefix: str, channel: str) -> str:
    """Return the Redis pub/sub channel that carries a realtime channel's events."""
    return f"{prefix}{{{channel}}}"


def dedup_key(prefix: str, channel: str, envelope_id: str) -> str:
    """Return the key that remembers an envelope id's offset."""
    return f"{prefix}{{{channel}}}:dedup:{envelope_id}"


def new_epoch() -> str:
    """Return a fresh random epoch (the script keeps the first one a channel gets)."""
    return secrets.token_hex(4)


# KEYS: 1 meta, 2 hist, 3 state, 4 dedup (may be an unused name)
# ARGV: 1 pubsub channel ("" = do not PUBLISH, e.g. the amqp transport publishes itself)
#       2 channel, 3 type, 4 data JSON text, 5 "1" if state, 6 history size,
#       7 history ttl s, 8 meta ttl s, 9 now ms, 10 epoch candidate, 11 "1" to de-duplicate,
#       12 (optional) state version: a state event whose version is not above the stored
#          one (meta "sv") is dropped: not stored, not published
# Returns {epoch, offset, duplicate (0/1; 2 = dropped as an older state), event-json}
PUBLISH_SCRIPT = """
if ARGV[11] == "1" then
  local seen = redis.call("GET", KEYS[4])
  if seen then
    local epoch = redis.call("HGET", KEYS[1], "epoch") or ""
    return {epoch, tonumber(seen), 1, ""}
  end
end
local version = tonumber(ARGV[12] or "")
if version and ARGV[5] == "1" then
  local stored = tonumber(redis.call("HGET", KEYS[1], "sv") or "")
  if stored and version <= stored then
    local epoch = redis.call("HGET", KEYS[1], "epoch") or ""
    return {epoch, tonumber(redis.call("HGET", KEYS[1], "offset") or "0"), 2, ""}
  end
  redis.call("HSET", KEYS[1], "sv", ARGV[12])
end
local epoch = redis.call("HGET", KEYS[1], "epoch")
if not epoch then
  epoch = ARGV[10]
  redis.call("HSET", KEYS[1], "epoch", epoch)
end
local offset = redis.call("HINCRBY", KEYS[1], "offset", 1)
local meta_ttl = tonumber(ARGV[8])
if meta_ttl > 0 then redis.call("EXPIRE", KEYS[1], meta_ttl) end
local event = '{"op":"event","channel":' .. cjson.encode(ARGV[2]) .. ',"offset":' .. offset
  .. ',"type":' .. cjson.encode(ARGV[3]) .. ',"data":' .. ARGV[4] .. '}'
local size = tonumber(ARGV[6])
if size > 0 then
  redis.call("RPUSH", KEYS[2], ARGV[9] .. " " .. event)
  redis.call("LTRIM", KEYS[2], -size, -1)
  redis.call("EXPIRE", KEYS[2], tonumber(ARGV[7]))
end
if ARGV[5] == "1" then
  if meta_ttl > 0 then
    redis.call("SET", KEYS[3], event, "EX", meta_ttl)
  else
    redis.call("SET", KEYS[3], event)
  end
end
if ARGV[11] == "1" then
  redis.call("SET", KEYS[4], offset, "EX", math.max(tonumber(ARGV[7]), 60))
end
if ARGV[1] ~= "" then
  redis.call("PUBLISH", ARGV[1], epoch .. " " .. offset .. " " .. ARGV[9] .. " " .. event)
end
return {epoch, offset, 0, event}
"""


def sharded(script: str) -> str:
    """Return ``script`` with its final PUBLISH turned into SPUBLISH (Redis Cluster).

    A sharded pub/sub message stays on the shard that owns its slot instead of being
    broadcast over the whole cluster bus; the pub/sub channel ``P{C}`` shares the channel's
    hash tag, so it belongs to the same slot as the keys the script touches.
    """
    call = 'redis.call("PUBLISH", ARGV[1], '
    if script.count(call) != 1:
        raise ValueError("the publish script no longer ends with one PUBLISH of ARGV[1]")
    return script.replace(call, 'redis.call("SPUBLISH", ARGV[1], ')


# The same script for Redis Cluster (7.0+): SPUBLISH, received with SSUBSCRIBE.
SHARDED_PUBLISH_SCRIPT = sharded(PUBLISH_SCRIPT)

# KEYS: 1 meta, 2 hist, 3 state. ARGV: 1 history count, 2 and 3 unused (kept for callers).
# Returns {epoch, offset, state or false, history...}, read in one step so that offset, state
# and history agree. A channel nobody published on has no meta: the reply is the empty epoch
# "0" at offset 0 and nothing is written (a subscribe to a made-up name leaves no key); its
# first event starts the real epoch, and a client at {"0", 0} continues into it.
SNAPSHOT_SCRIPT = """
local epoch = redis.call("HGET", KEYS[1], "epoch")
if not epoch then
  return {"0", 0, false}
end
local offset = tonumber(redis.call("HGET", KEYS[1], "offset") or "0")
local state = redis.call("GET", KEYS[3])
local want = tonumber(ARGV[1])
local result = {epoch, offset, state or false}
if want > 0 then
  local items = redis.call("LRANGE", KEYS[2], -want, -1)
  for i = 1, #items do result[#result + 1] = items[i] end
end
return result
"""

# KEYS: 1 meta, 2 hist, 3 state. ARGV: 1 the epoch the node saw go back, 2 the new epoch.
# A store that came back older under the same epoch would reuse offsets that clients have
# already seen; the first node to notice gives the channel a new epoch (compare-and-set, so
# concurrent nodes agree) and drops the history numbered in the old one. Returns
# {epoch, offset, state or false}.
RENEW_EPOCH_SCRIPT = """
local epoch = redis.call("HGET", KEYS[1], "epoch")
if epoch and epoch == ARGV[1] then
  redis.call("HSET", KEYS[1], "epoch", ARGV[2])
  redis.call("DEL", KEYS[2])
  epoch = ARGV[2]
end
if not epoch then
  return {"0", 0, false}
end
local offset = tonumber(redis.call("HGET", KEYS[1], "offset") or "0")
return {epoch, offset, redis.call("GET", KEYS[3]) or false}
"""


def event_offset(event_json: bytes) -> int | None:
    """Read the offset an event's JSON carries (``{"op":"event","channel":..,"offset":N,``).

    History entries are labelled by their own offset, never by their position: a publisher
    that keeps no history for some events leaves holes.
    """
    at = event_json.find(b'"offset":')
    if at < 0:
        return None
    start = at + 9
    end = start
    while end < len(event_json) and 48 <= event_json[end] <= 57:
        end += 1
    return int(event_json[start:end]) if end > start else None


def publish_args(
    prefix: str,
    *,
    channel: str,
    type_: str,
    data_json: bytes,
    state: bool,
    envelope_id: str | None,
    history_size: int,
    history_ttl: int,
    meta_ttl: int,
    now_ms: int,
    do_publish: bool = True,
    version: int | None = None,
) -> tuple[list[str], list[str | bytes | int]]:
    """Return (keys, args) for one ``PUBLISH_SCRIPT`` call (``version``: state events only)."""
    meta, hist, state_key = channel_keys(prefix, channel)
    dedup = dedup_key(prefix, channel, envelope_id or "-")
    keys = [meta, hist, state_key, dedup]
    args: list[str | bytes | int] = [
        pubsub_channel(prefix, channel) if do_publish else "",
        channel,
        type_,
        data_json,
        "1" if state else "0",
        history_size,
        history_ttl,
        meta_ttl,
        now_ms,
        new_epoch(),
        "1" if envelope_id else "0",
    ]
    if version is not None and state:
        args.append(version)
    return keys, args


def envelope_args(
    prefix: str,
    envelope: Envelope,
    *,
    history_size: int,
    history_ttl: int,
    meta_ttl: int,
    now_ms: int,
    do_publish: bool = True,
) -> tuple[list[str], list[str | bytes | int]]:
    """Return (keys, args) for publishing ``envelope`` (the server's and the bridge's call)."""
    return publish_args(
        prefix,
        channel=envelope.channel,
        type_=envelope.type,
        data_json=envelope.data_json,
        state=envelope.state,
        envelope_id=envelope.id,
        history_size=history_size,
        history_ttl=history_ttl,
        meta_ttl=meta_ttl,
        now_ms=now_ms,
        do_publish=do_publish,
        version=envelope.version,
    )
