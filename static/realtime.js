/*!
 * realtime.js: the browser client of the realtime server (PROTOCOL.md section 6).
 *
 * No build step and no dependency: load it with a <script> tag and use window.RealtimeClient.
 *
 *   const rt = new RealtimeClient("/ws", { getToken: async () => fetchToken() });
 *   const sub = rt.subscribe("leaderboard:42", {
 *     onState(event) {},          // the channel's state (event or null): on subscribe, after a resync
 *     onEvent(event) {},          // each event, in offset order, never twice
 *     since: { epoch, offset },   // optional: a position rendered with the page; recover from it
 *   });
 *   rt.on("connected", fn); rt.on("disconnected", fn); rt.on("error", fn); rt.on("state", fn);
 *   sub.unsubscribe(); rt.close();
 *
 * Guarantees: per channel, onEvent sees increasing offsets without duplicates. After a
 * reconnect every live subscription is re-sent with `since` = the last delivered position;
 * the server replays what was missed (onEvent) or, when it cannot, the client resyncs
 * (onState with the current state, which may be null) and goes on from there.
 *
 * Transports: WebSocket first; where WebSocket connections keep failing (a proxy that
 * blocks them) it falls back to Server-Sent Events (GET /sse) by itself, and tries the
 * WebSocket again later. Also an ES module: `import RealtimeClient from "./realtime.mjs"`.
 */
(function (root) {
  "use strict";

  var OPEN = 1;

  var DEFAULTS = {
    minDelay: 500, // first reconnect back-off ceiling (ms); doubles on each failure ...
    maxDelay: 20000, // ... up to this (full jitter: the delay is random in [0, ceiling])
    stableAfter: 10000, // a connection up this long resets the back-off
    restartDelay: 1500, // 1012 (server restart) and 1013 without retry-after: reconnect within this
    connectTimeout: 15000, // from opening the socket to "connected"; past it, retry
    tokenSkew: 5000, // a cached token this close to its exp is refreshed before reconnecting
    refreshAhead: 30000, // renew a token this long before its exp (at most half its lifetime)
    WebSocket: null, // WebSocket implementation (defaults to the global one)
    EventSource: null, // EventSource implementation (defaults to the global one)
    transports: ["websocket", "sse"], // in order of preference
    sseUrl: null, // the event-stream URL (default: the WebSocket URL with /ws -> /sse)
    fallbackAfter: 2, // WebSocket attempts failing before "welcome" before trying SSE
    upgradeDelay: 30000, // on SSE, try the WebSocket again after this (doubles up to 10 min)
    debug: false, // log frames with console.debug
  };

  function randomBetween(low, high) {
    return low + Math.random() * (high - low);
  }

  function resolveUrl(url) {
    var loc = root.location;
    if (!url) url = "/ws";
    if (/^wss?:\/\//i.test(url) || !loc) return url;
    var absolute = new URL(url, loc.href);
    absolute.protocol = absolute.protocol === "https:" ? "wss:" : "ws:";
    return absolute.href;
  }

  /** The event-stream URL that goes with a WebSocket URL: ws(s)://host/ws -> http(s)://host/sse. */
  function resolveSseUrl(wsUrl, sseUrl) {
    var loc = root.location;
    if (sseUrl) return loc ? new URL(sseUrl, loc.href).href : sseUrl;
    var url = new URL(wsUrl);
    url.protocol = url.protocol === "wss:" ? "https:" : "http:";
    url.pathname = url.pathname.replace(/\/ws\/?$/, "") + "/sse";
    url.search = "";
    url.hash = "";
    return url.href;
  }

  /**
   * An EventSource behind the few members of a WebSocket that the client uses: the
   * stream's channels and token are fixed by its URL (a change reopens it).
   */
  function SseSocket(EventSourceImpl, baseUrl, subs, token) {
    var params = [];
    var positions = [];
    var known = false;
    this.channels = [];
    for (var i = 0; i < subs.length; i++) {
      this.channels.push(subs[i].channel);
      params.push("channel=" + encodeURIComponent(subs[i].channel));
      positions.push(subs[i].epoch === null ? "" : subs[i].epoch + ":" + subs[i].offset);
      if (subs[i].epoch !== null) known = true;
    }
    if (token) params.push("token=" + encodeURIComponent(token));
    // where each channel stands; a reconnect of the EventSource itself sends Last-Event-ID
    if (known) params.push("last_event_id=" + encodeURIComponent(positions.join(",")));
    this.token = token;
    this.readyState = 0;
    this.source = new EventSourceImpl(baseUrl + (params.length ? "?" + params.join("&") : ""));
  }

  SseSocket.prototype.close = function () {
    this.readyState = 3;
    this.source.close();
  };

  /** Return a JWT's claims, or {} (never verifies anything). */
  function tokenClaims(token) {
    try {
      var part = String(token).split(".")[1];
      if (!part) return {};
      var b64 = part.replace(/-/g, "+").replace(/_/g, "/");
      while (b64.length % 4) b64 += "=";
      return JSON.parse(root.atob(b64)) || {};
    } catch (err) {
      return {};
    }
  }

  /** Return a JWT's `exp` claim in ms since the epoch, or null. */
  function tokenExpiry(token) {
    var claims = tokenClaims(token);
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  }

  /**
   * The renewal info the Django tag rendered next to `token` ({url, grant, csrf}), or null:
   * a page that passes the tag's token alone still renews it.
   */
  function renderedRefresh(token) {
    var doc = root.document;
    if (!token || !doc || !doc.querySelectorAll) return null;
    var blocks = doc.querySelectorAll('script[type="application/json"]');
    for (var i = 0; i < blocks.length; i++) {
      var text = blocks[i].textContent || "";
      if (text.indexOf(token) < 0) continue;
      try {
        var config = JSON.parse(text);
        if (config && config.token === token && config.refresh && config.refresh.url) return config.refresh;
      } catch (err) {
        // not the tag's block
      }
    }
    return null;
  }

  /**
   * A getToken that asks the Django bridge's token view (`refresh` = {url, grant, csrf}, as
   * rendered by the realtime_client tag): POST, same-origin cookies, Django's CSRF header.
   */
  function tokenViewGetter(refresh) {
    return function () {
      return root
        .fetch(refresh.url, {
          method: "POST",
          credentials: "same-origin",
          cache: "no-store",
          headers: { "Content-Type": "application/json", "X-CSRFToken": refresh.csrf || "" },
          body: JSON.stringify({ grant: refresh.grant }),
        })
        .then(function (response) {
          if (!response.ok) throw new Error("token view answered " + response.status);
          return response.json();
        })
        .then(function (body) {
          return body.token;
        });
    };
  }

  function validSince(since) {
    return (
      since != null &&
      typeof since === "object" &&
      since.epoch != null &&
      since.epoch !== "" &&
      typeof since.offset === "number" &&
      since.offset >= 0
    );
  }

  function callSafely(fn, self, arg, what) {
    if (typeof fn !== "function") return;
    try {
      fn.call(self, arg);
    } catch (err) {
      // A handler's bug must not break delivery to the others or the client's bookkeeping.
      if (root.console) root.console.error("realtime: " + what + " handler failed", err);
    }
  }

  /**
   * One channel subscription. Created by RealtimeClient#subscribe, never directly.
   *
   * `epoch`/`offset` are the last delivered position (offset 0 and epoch null before the
   * first `subscribed`); `status` is "pending" (waiting for a connection), "sent",
   * "live", "closed" (unsubscribed) or "failed" (the server refused it).
   */
  function Subscription(client, channel, handlers) {
    this.client = client;
    this.channel = channel;
    this.epoch = null;
    this.offset = 0;
    this.status = "pending";
    this.error = null;
    this._handlers = handlers || {};
    this._sentSince = null;
    this._retryTimer = null;
  }

  Object.defineProperty(Subscription.prototype, "position", {
    /** The last delivered {epoch, offset}, or null before the first sync. */
    get: function () {
      return this.epoch === null ? null : { epoch: this.epoch, offset: this.offset };
    },
  });

  Object.defineProperty(Subscription.prototype, "active", {
    get: function () {
      return this.status !== "closed" && this.status !== "failed";
    },
  });

  /** Stop receiving this channel's events (idempotent). */
  Subscription.prototype.unsubscribe = function () {
    this.client._unsubscribe(this);
  };

  /**
   * A connection to the realtime server that survives disconnects.
   *
   * @param {string} url  ws:// or wss:// URL, or a path such as "/ws" (same host as the page)
   * @param {object} options  `token` (a JWT) and/or `getToken` (async () => JWT, called when a
   *   token is needed, before it expires and when it has expired), or `refresh` ({url, grant,
   *   csrf} from the Django tag: a getToken that asks the bridge's token view); tuning: see
   *   DEFAULTS above.
   */
  function RealtimeClient(url, options) {
    if (!(this instanceof RealtimeClient)) throw new TypeError("use: new RealtimeClient(url, options)");
    options = options || {};
    this.url = resolveUrl(url);
    this.options = Object.assign({}, DEFAULTS, options);
    this.state = "connecting";
    this.serverTimeOffset = 0;
    this.session = null;
    this.user = null;
    this._WebSocket = this.options.WebSocket || root.WebSocket;
    this._EventSource = this.options.EventSource || root.EventSource;
    this.sseUrl = resolveSseUrl(this.url, this.options.sseUrl);
    this._transports = (this.options.transports || []).filter(function (name) {
      return name === "websocket" ? !!this._WebSocket : name === "sse" && !!this._EventSource;
    }, this);
    this.transport = this._transports[0] || "websocket";
    this._failures = 0; // attempts of this transport that failed before "welcome"
    this._gotWelcome = false;
    this._opened = false;
    this._wsWorked = false;
    this._upgradeDelay = this.options.upgradeDelay;
    this._probe = null;
    this._probeTimer = null;
    this._reopenTimer = null;
    this._awaitingAuth = false;
    this._token = options.token || null;
    var refresh = options.refresh === undefined ? renderedRefresh(options.token) : options.refresh;
    this._getToken =
      typeof options.getToken === "function"
        ? options.getToken
        : refresh && refresh.url
          ? tokenViewGetter(refresh)
          : null;
    this._renewTimer = null;
    this._tokenPromise = null;
    this._listeners = {};
    this._subs = new Map(); // channel -> live Subscription
    this._pending = new Map(); // command id -> {kind, sub}
    this._nextId = 1;
    this._ws = null;
    this._generation = 0;
    this._ready = false; // welcome (and auth) done on the current socket
    this._authRetried = false;
    this._refreshing = false;
    this._attempt = 0;
    this._closed = false;
    this._reconnectTimer = null;
    this._stableTimer = null;
    this._connectTimer = null;
    this._onOnline = this._handleOnline.bind(this);
    if (root.addEventListener) root.addEventListener("online", this._onOnline);
    this._connect();
  }

  // ---------------------------------------------------------------- public API

  /**
   * Build a client from the Django tag's config ({url, token, refresh, ...}); `options`
   * override or add to what the config gives.
   */
  RealtimeClient.fromConfig = function (config, options) {
    var base = { token: config.token || null, refresh: config.refresh || null };
    return new RealtimeClient(config.url, Object.assign(base, options || {}));
  };

  /** Listen to "connected", "disconnected", "error", "state" or "unsubscribed"; returns an off() function. */
  RealtimeClient.prototype.on = function (name, fn) {
    (this._listeners[name] = this._listeners[name] || []).push(fn);
    var self = this;
    return function () {
      self.off(name, fn);
    };
  };

  RealtimeClient.prototype.off = function (name, fn) {
    var list = this._listeners[name];
    if (!list) return;
    var i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
  };

  /**
   * Subscribe to a channel; returns a Subscription. One subscription per channel at a time.
   *
   * handlers: onState(event|null), onEvent(event), onError(err), onUnsubscribed(reason);
   * since: {epoch, offset} to recover from (e.g. rendered by the server with the page).
   */
  RealtimeClient.prototype.subscribe = function (channel, handlers) {
    if (typeof channel !== "string" || !channel) throw new TypeError("channel must be a non-empty string");
    if (this._subs.has(channel)) throw new Error("realtime: already subscribed to " + channel);
    handlers = handlers || {};
    var sub = new Subscription(this, channel, handlers);
    if (handlers.since != null) {
      if (!validSince(handlers.since)) throw new TypeError("since must be {epoch, offset}");
      sub.epoch = String(handlers.since.epoch);
      sub.offset = handlers.since.offset;
    }
    this._subs.set(channel, sub);
    if (this._ready) this._sendSubscribe(sub);
    return sub;
  };

  /** The subscription of a channel, if any. */
  RealtimeClient.prototype.subscription = function (channel) {
    return this._subs.get(channel) || null;
  };

  /** The server's clock in ms since the epoch (contest clocks use this, not Date.now()). */
  RealtimeClient.prototype.now = function () {
    return Date.now() + this.serverTimeOffset;
  };

  /** Use a new token from now on (sent at once when connected). */
  RealtimeClient.prototype.setToken = function (token) {
    this._token = token || null;
    this._authRetried = false;
    if (this._ready && this._token) this._sendAuth();
  };

  /** Connect again after close() or after the client stopped on an error. */
  RealtimeClient.prototype.connect = function () {
    if (!this._closed && this.state !== "closed") return;
    this._closed = false;
    this._attempt = 0;
    if (root.addEventListener) root.addEventListener("online", this._onOnline);
    this._connect();
  };

  /** Close the connection cleanly and stop reconnecting (subscriptions are kept for connect()). */
  RealtimeClient.prototype.close = function () {
    if (this._closed) return;
    this._closed = true;
    var wasConnected = this.state === "connected";
    this._dropSocket(1000, "client closed");
    this._clearTimer("_reconnectTimer");
    if (root.removeEventListener) root.removeEventListener("online", this._onOnline);
    this._setState("closed");
    if (wasConnected) {
      this._emit("disconnected", { code: 1000, reason: "client closed", reconnect: false });
    }
  };

  // ---------------------------------------------------------------- connection

  RealtimeClient.prototype._connect = function () {
    if (this._closed) return;
    this._clearTimer("_reconnectTimer");
    this._setState("connecting");
    var generation = ++this._generation;
    var self = this;
    var expiry = this._token ? tokenExpiry(this._token) : null;
    var stale = !this._token || (expiry !== null && expiry - this.now() < this.options.tokenSkew);
    if (this._getToken && stale) {
      this._fetchToken().then(
        function () {
          if (generation === self._generation && !self._closed) self._open();
        },
        function (err) {
          if (generation !== self._generation || self._closed) return;
          self._emit("error", { code: "token_unavailable", message: "getToken failed: " + describe(err) });
          self._scheduleReconnect(self._backoff(), null);
        }
      );
    } else {
      this._open();
    }
  };

  RealtimeClient.prototype._open = function () {
    this._gotWelcome = false;
    this._opened = false;
    if (this.transport === "sse") {
      this._openSse();
      return;
    }
    var ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (err) {
      this._stop({ code: "bad_url", message: "cannot open " + this.url + ": " + describe(err) });
      return;
    }
    this._ws = ws;
    this._ready = false;
    var self = this;
    ws.onopen = function () {
      if (ws === self._ws) self._opened = true;
    };
    ws.onmessage = function (ev) {
      if (ws === self._ws) self._receive(ev.data);
    };
    ws.onclose = function (ev) {
      if (ws === self._ws) self._handleClose(ev.code, ev.reason || "");
    };
    ws.onerror = function () {
      // a close event always follows; the browser does not tell why (e.g. 403, 503, refused)
    };
    this._connectTimer = setTimeout(function () {
      if (ws === self._ws && !self._ready) {
        self._dropSocket(1000, "connect timeout");
        self._afterClose(4000, "connect timeout", false);
      }
    }, this.options.connectTimeout);
  };

  RealtimeClient.prototype._dropSocket = function (code, reason) {
    var ws = this._ws;
    this._ws = null;
    this._ready = false;
    this._pending.clear();
    this._clearTimer("_connectTimer");
    this._clearTimer("_stableTimer");
    this._clearTimer("_renewTimer");
    this._clearTimer("_reopenTimer");
    this._clearTimer("_probeTimer");
    this._awaitingAuth = false;
    if (this._probe) {
      var probe = this._probe;
      this._probe = null;
      probe.close();
    }
    this._subs.forEach(function (sub) {
      if (sub.active) sub.status = "pending";
      if (sub._retryTimer) {
        clearTimeout(sub._retryTimer);
        sub._retryTimer = null;
      }
    });
    if (ws && ws.readyState <= OPEN) {
      try {
        ws.close(code, reason);
      } catch (err) {
        // already closing
      }
    }
  };

  RealtimeClient.prototype._handleClose = function (code, reason) {
    var wasConnected = this.state === "connected";
    this._ws = null;
    this._dropSocket();
    this._afterClose(code, reason, wasConnected);
  };

  RealtimeClient.prototype._afterClose = function (code, reason, wasConnected) {
    if (this._closed) return;
    // the transport did not get through (never opened, or opened into silence); a server
    // that answered and closed (1011, 1013...) is a server problem, not a blocked network
    if (!this._gotWelcome && (!this._opened || code === 4000)) this._transportFailed();
    if (code === 1008) {
      if (wasConnected) this._emit("disconnected", { code: code, reason: reason, reconnect: false });
      this._stop({ code: "policy_violation", message: reason || "closed by the server (1008)", closeCode: code });
      return;
    }
    var delay;
    if (code === 1012) {
      // the server restarts: come back soon, spread out so that every page does not arrive at once
      delay = randomBetween(100, this.options.restartDelay);
      this._attempt++;
    } else if (code === 1013) {
      var match = /retry-after=(\d+(?:\.\d+)?)/i.exec(reason);
      var wait = match ? parseFloat(match[1]) * 1000 : 0;
      delay = wait > 0 ? wait + randomBetween(0, Math.max(1000, wait * 0.5)) : randomBetween(500, this.options.restartDelay * 2);
      this._attempt++;
    } else {
      delay = this._backoff();
    }
    this._scheduleReconnect(delay, { code: code, reason: reason, wasConnected: wasConnected });
  };

  RealtimeClient.prototype._scheduleReconnect = function (delay, closeInfo) {
    if (this._closed) return;
    this._clearTimer("_reconnectTimer");
    this._setState("disconnected");
    if (closeInfo && closeInfo.wasConnected) {
      this._emit("disconnected", { code: closeInfo.code, reason: closeInfo.reason, reconnect: true, delay: delay });
    }
    var self = this;
    this._reconnectTimer = setTimeout(function () {
      self._reconnectTimer = null;
      self._connect();
    }, delay);
  };

  /** Full-jitter exponential back-off: random in [0, min(maxDelay, minDelay * 2^attempt)]. */
  RealtimeClient.prototype._backoff = function () {
    var ceiling = Math.min(this.options.maxDelay, this.options.minDelay * Math.pow(2, this._attempt));
    this._attempt++;
    return randomBetween(Math.min(50, ceiling), ceiling);
  };

  RealtimeClient.prototype._handleOnline = function () {
    // the network is back: do not sit out a long back-off
    if (this.state === "disconnected" && this._reconnectTimer) this._connect();
  };

  RealtimeClient.prototype._stop = function (error) {
    this._closed = true;
    this._dropSocket(1000, "client stopped");
    this._clearTimer("_reconnectTimer");
    if (root.removeEventListener) root.removeEventListener("online", this._onOnline);
    this._setState("closed");
    this._emit("error", error);
  };

  RealtimeClient.prototype._becomeReady = function () {
    this._ready = true;
    this._clearTimer("_connectTimer");
    var self = this;
    this._stableTimer = setTimeout(function () {
      self._attempt = 0;
    }, this.options.stableAfter);
    this._setState("connected");
    if (this.transport === "sse") this._scheduleProbe();
    this._resubscribeAll();
    this._emit("connected", { session: this.session, user: this.user });
  };

  RealtimeClient.prototype._resubscribeAll = function () {
    var self = this;
    this._subs.forEach(function (sub) {
      if (sub.status === "pending") self._sendSubscribe(sub);
    });
  };

  // ---------------------------------------------------------------- tokens

  RealtimeClient.prototype._fetchToken = function () {
    var self = this;
    if (!this._tokenPromise) {
      this._tokenPromise = Promise.resolve()
        .then(function () {
          return self._getToken();
        })
        .then(
          function (token) {
            self._tokenPromise = null;
            if (typeof token !== "string" || !token) throw new Error("getToken must return a token string");
            self._token = token;
            return token;
          },
          function (err) {
            self._tokenPromise = null;
            throw err;
          }
        );
    }
    return this._tokenPromise;
  };

  /**
   * Renew the token a little before it expires, so that the server never drops a private
   * subscription (call after each successful auth).
   */
  RealtimeClient.prototype._scheduleRenewal = function (retry) {
    this._clearTimer("_renewTimer");
    var claims = tokenClaims(this._token);
    if (!this._getToken || typeof claims.exp !== "number") return;
    var expiry = claims.exp * 1000;
    var issued = typeof claims.iat === "number" ? claims.iat * 1000 : this.now();
    var ahead = Math.min(this.options.refreshAhead, Math.max(0, expiry - issued) / 2);
    // at least a second apart: a getToken that hands out nearly expired tokens must not spin;
    // after a failed renewal, half the time left (the server's token_expired comes at exp)
    var delay = retry ? (expiry - this.now()) / 2 : expiry - ahead - this.now();
    delay = Math.max(1000, delay);
    var ws = this._ws;
    var self = this;
    this._renewTimer = setTimeout(function () {
      self._renewTimer = null;
      if (ws === self._ws && self._ready) self._refreshToken(true);
    }, delay);
  };

  RealtimeClient.prototype._sendAuth = function () {
    var id = this._nextId++;
    this._pending.set(String(id), { kind: "auth" });
    this._send({ op: "auth", token: this._token, id: id });
  };

  /** The token expired (pushed by the server, or a reply): get a new one and authenticate again. */
  RealtimeClient.prototype._refreshToken = function (ahead) {
    if (this._refreshing) return;
    if (!this._getToken) {
      this._emit("error", { code: "token_expired", message: "the token expired and there is no getToken to renew it" });
      return;
    }
    this._refreshing = true;
    var ws = this._ws;
    var self = this;
    this._fetchToken().then(
      function () {
        self._refreshing = false;
        if (ws === self._ws && ws) self._sendAuth();
      },
      function (err) {
        self._refreshing = false;
        self._emit("error", { code: "token_unavailable", message: "getToken failed: " + describe(err) });
        if (ahead) {
          // the current token is still valid: try again later on this connection
          if (ws === self._ws && ws) self._scheduleRenewal(true);
          return;
        }
        if (ws === self._ws && ws) {
          // reconnecting fetches a token again, with back-off
          self._dropSocket(1000, "token unavailable");
          self._afterClose(4001, "token unavailable", true);
        }
      }
    );
  };

  // ---------------------------------------------------------------- messages

  RealtimeClient.prototype._send = function (message) {
    if (this.transport === "sse") return this._sseCommand(message);
    var ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    var text = JSON.stringify(message);
    if (this.options.debug && root.console) root.console.debug("realtime >", text);
    ws.send(text);
    return true;
  };

  RealtimeClient.prototype._receive = function (data) {
    if (typeof data !== "string") return;
    if (this.options.debug && root.console) root.console.debug("realtime <", data);
    // one frame may carry several JSON objects separated by "\n"
    var lines = data.split("\n");
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      if (!line.trim()) continue;
      var message;
      try {
        message = JSON.parse(line);
      } catch (err) {
        if (root.console) root.console.warn("realtime: ignoring a frame that is not JSON", line.slice(0, 200));
        continue;
      }
      if (message && typeof message === "object") this._dispatch(message);
      if (!this._ws) return; // the message closed the connection
    }
  };

  RealtimeClient.prototype._dispatch = function (msg) {
    var pending = null;
    if (msg.id != null && this._pending.has(String(msg.id))) {
      pending = this._pending.get(String(msg.id));
      this._pending.delete(String(msg.id));
    }
    switch (msg.op) {
      case "event":
        this._onEvent(msg);
        break;
      case "welcome":
        this._onWelcome(msg);
        break;
      case "authed":
        this._onAuthed(msg);
        break;
      case "subscribed":
        this._onSubscribed(msg, pending);
        break;
      case "unsubscribed":
        if (!pending) this._onDropped(msg);
        break;
      case "error":
        this._onError(msg, pending);
        break;
      default:
        break; // pong and anything newer than this client
    }
  };

  RealtimeClient.prototype._onWelcome = function (msg) {
    this._gotWelcome = true;
    this._failures = 0;
    if (this.transport === "websocket") this._wsWorked = true;
    this.session = msg.session || null;
    if (typeof msg.time === "number") this.serverTimeOffset = msg.time - Date.now();
    this._authRetried = false;
    if (this._token) this._sendAuth();
    else this._becomeReady();
  };

  RealtimeClient.prototype._onAuthed = function (msg) {
    this._awaitingAuth = false;
    this.user = msg.user != null ? String(msg.user) : null;
    this._authRetried = false;
    this._scheduleRenewal();
    if (!this._ready) this._becomeReady();
    else this._resubscribeAll(); // channels dropped while the token was expired
  };

  RealtimeClient.prototype._sendSubscribe = function (sub) {
    var id = this._nextId++;
    var command = { op: "subscribe", channel: sub.channel, id: id };
    if (sub.epoch !== null) command.since = { epoch: sub.epoch, offset: sub.offset };
    sub._sentSince = command.since || null;
    sub.status = "sent";
    this._pending.set(String(id), { kind: "subscribe", sub: sub });
    this._send(command);
  };

  RealtimeClient.prototype._onSubscribed = function (msg, pending) {
    var sub = pending && pending.kind === "subscribe" ? pending.sub : this._subs.get(msg.channel);
    if (!sub || this._subs.get(sub.channel) !== sub || !sub.active) return; // a stale reply
    var since = sub._sentSince;
    sub._sentSince = null;
    sub.status = "live";
    // an unasked reply at offset 0 names the epoch the channel's first event starts (we
    // subscribed before any event): nothing was missed, and `since` can recover from now on
    var epochStarts = !pending && msg.offset === 0 && sub.offset === 0;
    var recovered = msg.recovered === true && (pending ? since !== null : true) && (sub.epoch === String(msg.epoch) || epochStarts);
    if (recovered) {
      sub.epoch = String(msg.epoch);
      var missed = Array.isArray(msg.missed) ? msg.missed : [];
      for (var i = 0; i < missed.length; i++) this._deliver(sub, missed[i]);
      if (typeof msg.offset === "number" && msg.offset > sub.offset) sub.offset = msg.offset;
    } else {
      // first subscribe, or the server could not fill the gap: resync from the state
      sub.epoch = msg.epoch != null ? String(msg.epoch) : null;
      sub.offset = typeof msg.offset === "number" ? msg.offset : 0;
      callSafely(sub._handlers.onState, sub, msg.state || null, "onState");
    }
  };

  RealtimeClient.prototype._onEvent = function (msg) {
    var sub = this._subs.get(msg.channel);
    // before `subscribed` the reply's state/missed cover everything: nothing to do yet
    if (sub && sub.status === "live") this._deliver(sub, msg);
  };

  RealtimeClient.prototype._deliver = function (sub, event) {
    if (typeof event.offset === "number") {
      if (event.offset <= sub.offset) return; // already delivered (same epoch)
      sub.offset = event.offset;
    }
    callSafely(sub._handlers.onEvent, sub, event, "onEvent");
  };

  RealtimeClient.prototype._onDropped = function (msg) {
    var sub = this._subs.get(msg.channel);
    if (!sub || !sub.active) return;
    var reason = msg.reason || "";
    // dropped because the token expired: kept, and subscribed again once re-authenticated
    // (with getToken now; with a static token after rt.setToken() or a reconnect)
    var resubscribe = /expired/i.test(reason);
    if (resubscribe) {
      sub.status = "pending";
    } else {
      this._subs.delete(sub.channel);
      sub.status = "closed";
    }
    // always announced: a page must never look live on a channel the server dropped
    callSafely(sub._handlers.onUnsubscribed, sub, reason, "onUnsubscribed");
    this._emit("unsubscribed", { channel: sub.channel, reason: reason, resubscribe: resubscribe });
    if (resubscribe && this._getToken) this._refreshToken();
  };

  RealtimeClient.prototype._onError = function (msg, pending) {
    var err = { code: msg.code || "error", message: msg.message || "", channel: msg.channel || null };
    if (!pending && this._awaitingAuth && !msg.channel) {
      // an event stream answers the token of its URL without an id
      this._awaitingAuth = false;
      pending = { kind: "auth" };
    }
    if (pending && pending.kind === "auth") {
      if (err.code === "token_expired" && this._getToken && !this._authRetried) {
        this._authRetried = true;
        this._token = null;
        this._refreshToken();
        return;
      }
      this._stop(err); // a token the server refuses will not get better by retrying
      return;
    }
    var sub = pending && pending.kind === "subscribe" ? pending.sub : null;
    if (!sub && !pending && msg.channel) {
      var candidate = this._subs.get(msg.channel);
      if (candidate && candidate.status === "sent") sub = candidate;
    }
    if (sub) {
      this._onSubscribeError(sub, err);
      return;
    }
    if (!pending && err.code === "token_expired") {
      this._refreshToken(); // pushed when the connection's token expires
      return;
    }
    this._emit("error", err);
  };

  RealtimeClient.prototype._onSubscribeError = function (sub, err) {
    if (this._subs.get(sub.channel) !== sub || !sub.active) return;
    var self = this;
    if (err.code === "rate_limited") {
      sub.status = "pending";
      sub._retryTimer = setTimeout(function () {
        sub._retryTimer = null;
        if (self._ready && sub.status === "pending") self._sendSubscribe(sub);
      }, randomBetween(1000, 3000));
      return;
    }
    if (err.code === "token_expired" && this._getToken) {
      sub.status = "pending";
      this._refreshToken();
      return;
    }
    this._subs.delete(sub.channel);
    sub.status = "failed";
    sub.error = err;
    callSafely(sub._handlers.onError, sub, err, "onError");
    this._emit("error", err);
  };

  RealtimeClient.prototype._unsubscribe = function (sub) {
    if (this._subs.get(sub.channel) !== sub) return;
    this._subs.delete(sub.channel);
    var wasSent = sub.status === "live" || sub.status === "sent";
    sub.status = "closed";
    if (sub._retryTimer) {
      clearTimeout(sub._retryTimer);
      sub._retryTimer = null;
    }
    if (wasSent && this._ready) {
      var id = this._nextId++;
      this._pending.set(String(id), { kind: "unsubscribe", sub: sub });
      this._send({ op: "unsubscribe", channel: sub.channel, id: id });
    }
  };

  // ---------------------------------------------------------------- Server-Sent Events

  RealtimeClient.prototype._openSse = function () {
    var subs = [];
    this._subs.forEach(function (sub) {
      if (sub.active) subs.push(sub);
    });
    var sock;
    try {
      sock = new SseSocket(this._EventSource, this.sseUrl, subs, this._token);
    } catch (err) {
      this._stop({ code: "bad_url", message: "cannot open " + this.sseUrl + ": " + describe(err) });
      return;
    }
    this._ws = sock;
    this._ready = false;
    // the URL subscribes them: their `subscribed` messages come without an id
    subs.forEach(function (sub) {
      sub.status = "sent";
      sub._sentSince = sub.position;
    });
    var self = this;
    sock.source.onopen = function () {
      if (sock !== self._ws) return;
      sock.readyState = OPEN;
      self._opened = true;
    };
    sock.source.onmessage = function (ev) {
      if (sock === self._ws) self._receive(ev.data);
    };
    sock.source.onerror = function () {
      // the stream ended or could not start: reconnect through our own back-off, with the
      // positions in the URL (not the EventSource's own retry, which keeps an old token)
      if (sock !== self._ws) return;
      sock.close();
      self._handleClose(1006, "event stream ended");
    };
    this._connectTimer = setTimeout(function () {
      if (sock === self._ws && !self._ready) {
        self._dropSocket();
        self._afterClose(4000, "connect timeout", false);
      }
    }, this.options.connectTimeout);
  };

  /** A command on an event stream: the stream's URL says it all, so a change reopens it. */
  RealtimeClient.prototype._sseCommand = function (message) {
    var sock = this._ws;
    if (!sock) return false;
    if (message.op === "auth") {
      if (!this._ready && message.token === sock.token) this._awaitingAuth = true;
      else this._reopenSse();
    } else if (message.op === "subscribe") {
      if (sock.channels.indexOf(message.channel) < 0) this._reopenSse();
    } else if (message.op === "unsubscribe") {
      this._reopenSse();
    }
    return true;
  };

  /** Replace the event stream (new channels or token); positions make it lossless. */
  RealtimeClient.prototype._reopenSse = function () {
    if (this._reopenTimer) return;
    var self = this;
    this._reopenTimer = setTimeout(function () {
      self._reopenTimer = null;
      if (self.transport !== "sse" || !self._ws || self._closed) return;
      self._dropSocket();
      self._openSse();
    }, 0);
  };

  RealtimeClient.prototype._transportFailed = function () {
    this._failures++;
    // a WebSocket that worked before on this page is probably a restarting server
    var limit = this.options.fallbackAfter * (this.transport === "websocket" && this._wsWorked ? 3 : 1);
    if (this._failures < limit) return;
    var others = this._transports.filter(function (name) {
      return name !== this.transport;
    }, this);
    if (others.length) this._switchTransport(others[0]);
  };

  RealtimeClient.prototype._switchTransport = function (name) {
    this._failures = 0;
    if (this.transport === name) return;
    this.transport = name;
    if (this.options.debug && root.console) root.console.debug("realtime: transport", name);
    this._emit("transport", name);
  };

  /** On SSE, see now and then whether a WebSocket gets through; if so, move back to it. */
  RealtimeClient.prototype._scheduleProbe = function () {
    if (this._probeTimer || this._probe || this._transports.indexOf("websocket") < 0) return;
    var self = this;
    this._probeTimer = setTimeout(function () {
      self._probeTimer = null;
      self._probeWebSocket();
    }, this._upgradeDelay);
  };

  RealtimeClient.prototype._probeWebSocket = function () {
    var self = this;
    var ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (err) {
      return;
    }
    var timer = null;
    var probe = {
      close: function () {
        clearTimeout(timer);
        try {
          ws.close(1000, "probe");
        } catch (err) {
          // already closed
        }
      },
    };
    this._probe = probe;
    function finish(ok) {
      if (self._probe !== probe) return;
      self._probe = null;
      probe.close();
      if (self._closed || self.transport !== "sse") return;
      if (ok) {
        self._upgradeDelay = self.options.upgradeDelay;
        self._switchTransport("websocket");
        self._dropSocket(1000, "back to WebSocket");
        self._connect(); // subscriptions resume with `since`: nothing lost
      } else {
        self._upgradeDelay = Math.min(self._upgradeDelay * 2, 600000);
        if (self._ready) self._scheduleProbe();
      }
    }
    ws.onmessage = function (ev) {
      finish(typeof ev.data === "string" && ev.data.indexOf('"welcome"') >= 0);
    };
    ws.onclose = function () {
      finish(false);
    };
    timer = setTimeout(function () {
      finish(false);
    }, this.options.connectTimeout);
  };

  // ---------------------------------------------------------------- helpers

  RealtimeClient.prototype._setState = function (state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state);
  };

  RealtimeClient.prototype._emit = function (name, detail) {
    var list = (this._listeners[name] || []).slice();
    if (name === "error" && list.length === 0 && root.console) {
      root.console.error("realtime: " + detail.code + (detail.message ? ": " + detail.message : ""));
    }
    for (var i = 0; i < list.length; i++) callSafely(list[i], this, detail, name);
  };

  RealtimeClient.prototype._clearTimer = function (name) {
    if (this[name]) {
      clearTimeout(this[name]);
      this[name] = null;
    }
  };

  function describe(err) {
    return err && err.message ? err.message : String(err);
  }

  RealtimeClient.Subscription = Subscription;
  RealtimeClient.version = "1.0.0";
  root.RealtimeClient = RealtimeClient;
  if (typeof module === "object" && module && module.exports) module.exports = RealtimeClient;
})(typeof window !== "undefined" ? window : globalThis);
