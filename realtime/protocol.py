"""The sans-I/O session: one connection's protocol state, text in, actions out.

A ``Session`` knows who the client is, what it subscribed to and how fast it talks; it
never touches a socket or the node. ``connection.py`` feeds it frames and carries out the
actions it returns (send a reply, subscribe through the node, close).

Call order: ``receive`` for every text frame; ``subscribe_failed`` when the node could
not complete a ``Subscribe`` action; ``check_token`` when the token's expiry is due.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from realtime import messages
from realtime.auth import ANONYMOUS, Identity, check_channel, is_expired, verify_token
from realtime.config import Settings
from realtime.errors import CloseCode, ErrorCode, ProtocolError
from realtime.messages import Since


@dataclass(frozen=True, slots=True)
class Reply:
    """Send these bytes as a text frame; ``error``/``channel`` say what an error reply refused."""

    data: bytes
    error: ErrorCode | None = None
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Subscribe through the node and answer with ``subscribed`` (or an error)."""

    channel: str
    since: Since | None
    command_id: str | int | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Drop a subscription and answer with ``unsubscribed``."""

    channel: str
    command_id: str | int | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with this code."""

    code: CloseCode
    reason: str


Action = Reply | Subscribe | Unsubscribe | Close


class TokenBucket:
    """Allow ``rate`` events a second with bursts of ``burst``."""

    __slots__ = ("_burst", "_clock", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._stamp = clock()

    def take(self) -> bool:
        """Take one token; False when the bucket is empty."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


# channels a session remembers having held, so that re-subscribing one (a page's
# StrictMode double mount, a reconnect) costs no churn token
KNOWN_CHANNELS = 256


class Session:
    """Protocol state of one connection (no I/O)."""

    __slots__ = (
        "_bucket",
        "_churn",
        "_flood_strikes",
        "_ip_churn",
        "_known",
        "_revoked",
        "_settings",
        "_wall_clock",
        "channels",
        "expiry_notified",
        "identity",
    )

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        ip_churn: TokenBucket | None = None,
        revoked: Mapping[str, float] | None = None,
    ) -> None:
        self._settings = settings
        self._wall_clock = wall_clock
        self._bucket = TokenBucket(settings.rate_limit, settings.rate_burst, clock)
        self._churn = TokenBucket(settings.channel_churn_rate, settings.channel_churn_burst, clock)
        self._ip_churn = ip_churn  # shared by every connection of the client's IP
        self._known: set[str] = set()
        # user -> when an operator revoked them: tokens issued until then are refused
        self._revoked = revoked if revoked is not None else {}
        self._flood_strikes = 0
        self.identity: Identity = ANONYMOUS
        self.channels: set[str] = set()
        self.expiry_notified = False

    def _rate_limited(self) -> list[Action] | None:
        if self._bucket.take():
            self._flood_strikes = 0
            return None
        self._flood_strikes += 1
        if self._flood_strikes >= self._settings.flood_close_after:
            return [Close(CloseCode.POLICY_VIOLATION, "flooding")]
        return [Reply(messages.error(ErrorCode.RATE_LIMITED, "too many commands"))]

    def receive_binary(self) -> list[Action]:
        """Handle one client binary frame: refused, but counted like any command."""
        limited = self._rate_limited()
        if limited is not None:
            return limited
        data = messages.error(ErrorCode.BAD_REQUEST, "send text frames")
        return [Reply(data, ErrorCode.BAD_REQUEST)]

    def receive(self, text: str | bytes) -> list[Action]:
        """Handle one client text frame and return what to do about it."""
        limited = self._rate_limited()
        if limited is not None:
            return limited
        try:
            command = messages.parse_command(text)
            return self._dispatch(command)
        except ProtocolError as exc:
            data = messages.error(exc.code, exc.message, exc.channel, exc.command_id)
            return [Reply(data, exc.code, exc.channel)]

    def _dispatch(self, command: messages.Command) -> list[Action]:
        cid = command.id
        try:
            if command.op == "ping":
                return [Reply(messages.pong(cid))]
            if command.op == "auth":
                return self._auth(command.token or "", cid)
            if command.op == "subscribe":
                return self._subscribe(command.channel or "", command.since, cid)
            return self._unsubscribe(command.channel or "", cid)
        except ProtocolError as exc:
            exc.command_id = cid
            raise

    def _auth(self, token: str, cid: str | int | None) -> list[Action]:
        identity = verify_token(token, self._settings.secret or "", self._settings.require_exp)
        revoked_at = self._revoked.get(identity.user or "")
        if revoked_at is not None and (identity.issued is None or identity.issued <= revoked_at):
            # a banned user must not come back with the token they already had
            raise ProtocolError(ErrorCode.FORBIDDEN, "this token was revoked; get a new one")
        self.identity = identity  # only a token that verified replaces the identity
        self.expiry_notified = False
        actions: list[Action] = [Reply(messages.authed(identity.user or "", cid))]
        actions.extend(self._revoke_disallowed("forbidden"))
        return actions

    def _revoke_disallowed(self, reason: str) -> list[Action]:
        """Drop subscriptions the current identity may no longer hold."""
        dropped: list[Action] = []
        for channel in sorted(self.channels):
            try:
                check_channel(self._settings.namespaces, self.identity, channel)
            except ProtocolError:
                self.channels.discard(channel)
                dropped.append(Unsubscribe(channel, None, reason))
        return dropped

    def _subscribe(self, channel: str, since: Since | None, cid: str | int | None) -> list[Action]:
        self._check_access(channel)
        if channel in self.channels:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "already subscribed", channel)
        if len(self.channels) >= self._settings.max_subscriptions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self._settings.max_subscriptions} subscriptions per connection",
                channel,
            )
        if channel not in self._known:
            if not self._churn.take() or (self._ip_churn is not None and not self._ip_churn.take()):
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED, "too many new channels; slow down", channel
                )
            if len(self._known) < KNOWN_CHANNELS:
                self._known.add(channel)
        self.channels.add(channel)
        return [Subscribe(channel, since, cid)]

    def _check_access(self, channel: str) -> None:
        """Check a new subscription; an expired token grants nothing, grace or not."""
        identity = self.identity
        if not is_expired(identity, self._wall_clock()):
            check_channel(self._settings.namespaces, identity, channel)
            return
        try:
            check_channel(self._settings.namespaces, ANONYMOUS, channel)
        except ProtocolError as exc:
            if exc.code in (ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN):
                raise ProtocolError(
                    ErrorCode.TOKEN_EXPIRED, "token has expired; send auth", channel
                ) from None
            raise

    def _unsubscribe(self, channel: str, cid: str | int | None) -> list[Action]:
        if channel not in self.channels:
            # idempotent: the client's view and ours agree now
            return [Reply(messages.unsubscribed(channel, cid))]
        self.channels.discard(channel)
        return [Unsubscribe(channel, cid)]

    def subscribe_failed(self, channel: str) -> None:
        """Forget a subscription the node could not complete."""
        self.channels.discard(channel)

    def check_token(self, grace: float) -> tuple[list[Action], float | None]:
        """Handle token expiry; return actions and when to call again (unix time or None).

        At ``exp`` the client is told (``token_expired``, no id) and has ``grace`` seconds to
        send a fresh token; after that, private subscriptions are dropped and the
        connection continues as anonymous.
        """
        identity = self.identity
        if identity.expires is None:
            return [], None
        now = self._wall_clock()
        if not is_expired(identity, now):
            return [], identity.expires
        if not self.expiry_notified:
            self.expiry_notified = True
            return [
                Reply(messages.error(ErrorCode.TOKEN_EXPIRED, "token has expired; send auth"))
            ], identity.expires + grace
        if now < identity.expires + grace:
            return [], identity.expires + grace
        self.identity = ANONYMOUS
        self.expiry_notified = False
        return self._revoke_disallowed("token_expired"), None
