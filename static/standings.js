/*
 * Live standings for the browser: StandingsView (the moves logic) and StandingsBoard (a table
 * with pages, the viewer's own row pinned, and the watcher count). No build step, no
 * dependency; needs realtime.js. The Python twin of StandingsView is
 * django_bridge/leaderboard_view.py (same rules; docs/LEADERBOARDS.md explains them).
 *
 *   const board = new StandingsBoard(rt, {
 *     contest: "42", me: "1001",               // me: the viewer's user id, or null
 *     read: (q) => fetch(url + "?" + new URLSearchParams(q)).then((r) => r.json()),
 *     table: document.querySelector("#standings tbody"), mine: el, watching: el,
 *     problems: ["A", "B"], pageSize: 50, page: 1, rules: "icpc",
 *   });
 *   board.showPage(3);
 *
 * `read(query)` must answer Leaderboard.window(**query) as JSON: {v, n, start, rows}.
 */
(function (root) {
  "use strict";

  function Track(kind, size, pageStart, margin) {
    this.kind = kind; // "page" | "around" | "own"
    this.size = size;
    this.pageStart = pageStart || 0;
    this.margin = margin || 0;
    this.v = -1;
    this.start = 0;
    this.n = 0;
    this.rows = [];
    this.stale = true;
  }

  /** One watcher's tracks of a public board, kept from standings:<contest> moves. */
  function StandingsView(me, options) {
    this.me = me === undefined || me === null ? null : String(me);
    this.tracks = {};
    this.moves = new Map();
    this.newest = -1;
    this.gapTimeout = (options && options.gapTimeout) || 2000; // ms
    this.gapSince = null;
  }

  StandingsView.prototype.followPage = function (name, start, size, margin) {
    this.tracks[name] = new Track("page", size, start, margin === undefined ? size : margin);
  };
  StandingsView.prototype.followAround = function (name, k) {
    this.tracks[name] = new Track("around", k, 0, 2 * k + 10);
  };
  StandingsView.prototype.followOwn = function (name) {
    this.tracks[name || "own"] = new Track("own", 0, 0, 0);
  };

  /** Read every track again (the channel was resynced: moves may be missing). */
  StandingsView.prototype.reset = function () {
    for (var name in this.tracks) this.tracks[name].stale = true;
    this.moves.clear();
    this.gapSince = null;
  };

  /** The reads stale tracks need: {name: {start, count} or {around, k}}. */
  StandingsView.prototype.requests = function () {
    var out = {};
    for (var name in this.tracks) {
      var t = this.tracks[name];
      if (!t.stale) continue;
      if (t.kind === "page") {
        var first = Math.max(0, t.pageStart - t.margin);
        out[name] = { start: first, count: t.pageStart + t.size + t.margin - first };
      } else if (this.me !== null) {
        out[name] = { around: this.me, k: t.kind === "around" ? t.margin : 0 };
      }
    }
    return out;
  };

  StandingsView.prototype.load = function (name, w) {
    var t = this.tracks[name];
    if (!t) return;
    t.v = w.v;
    t.start = Math.max(0, w.start);
    t.n = w.n;
    t.stale = false;
    t.rows = w.start >= 0 ? w.rows.map(function (r) { return Object.assign({}, r); }) : [];
    this._catchUp(t);
    this._prune();
  };

  /** Take one standings:<contest> event (leaderboard.move or leaderboard.reset). */
  StandingsView.prototype.feed = function (event, now) {
    var data = event.data;
    if (event.type === "leaderboard.reset") data = Object.assign({ reset: true }, data);
    if (data.v <= this._floor()) return;
    this.moves.set(data.v, data);
    if (data.v > this.newest) this.newest = data.v;
    for (var name in this.tracks) this._catchUp(this.tracks[name]);
    this._checkGap(now === undefined ? Date.now() : now);
    this._prune();
  };

  /** True when a version stayed missing for gapTimeout: every track must be read again. */
  StandingsView.prototype.stalled = function (now) {
    this._checkGap(now);
    if (this.gapSince !== null && now - this.gapSince >= this.gapTimeout) {
      for (var name in this.tracks) this.tracks[name].stale = true;
      this.gapSince = null;
      return true;
    }
    return false;
  };

  StandingsView.prototype._checkGap = function (now) {
    var waiting = false;
    for (var name in this.tracks) {
      var t = this.tracks[name];
      if (!t.stale && t.v >= 0 && t.v < this.newest) waiting = true;
    }
    if (!waiting) this.gapSince = null;
    else if (this.gapSince === null) this.gapSince = now;
  };

  StandingsView.prototype._floor = function () {
    var floor = Infinity;
    for (var name in this.tracks) {
      var t = this.tracks[name];
      if (!t.stale && t.v >= 0 && t.v < floor) floor = t.v;
    }
    return floor === Infinity ? -1 : floor;
  };

  StandingsView.prototype._prune = function () {
    var floor = this._floor();
    var self = this;
    if (floor >= 0) this.moves.forEach(function (_, v) { if (v <= floor) self.moves.delete(v); });
  };

  StandingsView.prototype._catchUp = function (t) {
    while (!t.stale && t.v >= 0 && this.moves.has(t.v + 1)) {
      t.v += 1;
      var m = this.moves.get(t.v);
      if (m.reset) { t.stale = true; return; }
      t.n = m.n;
      this._apply(t, m);
    }
  };

  StandingsView.prototype._apply = function (t, m) {
    var user = String(m.user), to = m.to, from = m.from;
    for (var i = 0; i < t.rows.length; i++) {
      var r = t.rows[i];
      if (r.user !== user) r.rank += (to > r.key ? 1 : 0) - (from !== null && from > r.key ? 1 : 0);
    }
    var row = Object.assign({}, m.row, { rank: m.rank, key: to });
    if (t.kind === "own") {
      if (user === this.me) t.rows = [row];
      return;
    }
    if (m.old !== null) {
      if (m.old < t.start) t.start -= 1;
      else if (m.old < t.start + t.rows.length) {
        if (t.rows[m.old - t.start].user !== user) { t.stale = true; return; }
        t.rows.splice(m.old - t.start, 1);
      }
    }
    if (m.pos < t.start) t.start += 1;
    else if (m.pos <= t.start + t.rows.length) t.rows.splice(m.pos - t.start, 0, row);
    this._trim(t);
  };

  StandingsView.prototype._range = function (t) {
    if (t.kind === "page") return [t.pageStart, Math.min(t.pageStart + t.size, t.n)];
    for (var i = 0; i < t.rows.length; i++) {
      if (t.rows[i].user === this.me) {
        var at = t.start + i;
        return [Math.max(0, at - t.size), Math.min(at + t.size + 1, t.n)];
      }
    }
    return null;
  };

  StandingsView.prototype._trim = function (t) {
    var range = this._range(t);
    if (range === null) { t.stale = true; return; }
    var keepLo = Math.max(t.start, range[0] - t.margin), keepHi = range[1] + t.margin;
    t.rows = t.rows.slice(keepLo - t.start, Math.max(0, keepHi - t.start));
    t.start = keepLo;
    if (t.start > range[0] || t.start + t.rows.length < range[1]) t.stale = true;
  };

  /** The rows a track shows (with ranks), or null while it waits for a read. */
  StandingsView.prototype.rows = function (name) {
    var t = this.tracks[name];
    if (!t || t.stale || t.v < 0) return null;
    if (t.kind === "own") return t.rows.slice();
    var lo, hi;
    if (t.kind === "page") { lo = t.pageStart; hi = t.pageStart + t.size; }
    else {
      var range = this._range(t);
      if (range === null) return [];
      lo = range[0]; hi = range[1];
    }
    return t.rows.filter(function (_, i) { return lo <= t.start + i && t.start + i < hi; });
  };

  // ------------------------------------------------------------------ the board component

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function icpcCell(c) {
    if (!c) return el("td", "");
    if (c[1] !== null) return el("td", "+" + (c[0] || "") + " " + c[1] + "'", "verdict-AC");
    return el("td", c[0] ? "\u2212" + c[0] : "", c[0] ? "verdict-WA" : "");
  }

  function ioiCell(c) {
    return el("td", c ? c[0] : "", c && c[0] > 0 ? "verdict-AC" : "");
  }

  /**
   * A live standings table: one page of the board, the viewer's row pinned (rank live
   * within one coalescing window), and "N watching" from presence:standings:<contest>.
   */
  function StandingsBoard(rt, options) {
    this.rt = rt;
    this.o = Object.assign({ pageSize: 50, page: 1, rules: "icpc", problems: [] }, options);
    this.view = new StandingsView(this.o.me);
    this.view.followOwn("own");
    this.page = this.o.page;
    this.view.followPage("page", (this.page - 1) * this.o.pageSize, this.o.pageSize);
    this.reading = {};
    this.frame = 0;
    var self = this;
    this.sub = rt.subscribe("standings:" + this.o.contest, {
      onState: function () {
        // (re)subscribed without recovery: every track reads the board again
        self.view.reset();
        self._read();
      },
      onEvent: function (event) {
        self.view.feed(event, Date.now());
        self._read();
        self._render();
      },
    });
    if (this.o.watching) {
      this.presence = rt.subscribe("presence:standings:" + this.o.contest, {
        onState: function (e) { if (e) self._watching(e.data.count); },
        onEvent: function (e) { self._watching(e.data.count); },
      });
    }
    this.timer = setInterval(function () {
      if (self.view.stalled(Date.now())) self._read();
    }, 500);
    this._read();
  }

  StandingsBoard.prototype.showPage = function (page) {
    this.page = Math.max(1, page | 0);
    this.view.followPage("page", (this.page - 1) * this.o.pageSize, this.o.pageSize);
    this._read();
    this._render();
  };

  StandingsBoard.prototype.close = function () {
    clearInterval(this.timer);
    this.sub.unsubscribe();
    if (this.presence) this.presence.unsubscribe();
  };

  StandingsBoard.prototype._read = function () {
    var self = this, wanted = this.view.requests();
    Object.keys(wanted).forEach(function (name) {
      if (self.reading[name]) return;
      self.reading[name] = true;
      Promise.resolve(self.o.read(wanted[name]))
        .then(function (w) {
          self.reading[name] = false;
          // a page switched meanwhile asks again; an old answer for it is dropped
          var still = self.view.requests()[name];
          if (still && JSON.stringify(still) === JSON.stringify(wanted[name])) {
            self.view.load(name, w);
          }
          self._render();
        })
        .catch(function () { self.reading[name] = false; });
    });
  };

  StandingsBoard.prototype._watching = function (count) {
    this.o.watching.textContent = Number(count).toLocaleString() + " watching";
  };

  StandingsBoard.prototype._row = function (row, mine) {
    var tr = el("tr", null, mine ? "mine" : "");
    tr.appendChild(el("td", row.rank));
    tr.appendChild(el("td", row.name || row.user));
    var icpc = this.o.rules === "icpc";
    tr.appendChild(el("td", icpc ? row.solved : row.score));
    tr.appendChild(el("td", icpc ? row.penalty : row.last));
    this.o.problems.forEach(function (code) {
      tr.appendChild(icpc ? icpcCell(row.cells[code]) : ioiCell(row.cells[code]));
    });
    return tr;
  };

  StandingsBoard.prototype._render = function () {
    if (this.frame) return;
    var self = this;
    var schedule = root.requestAnimationFrame || function (fn) { return setTimeout(fn, 16); };
    this.frame = schedule(function () {
      self.frame = 0;
      var rows = self.view.rows("page");
      if (rows !== null && self.o.table) {
        self.o.table.textContent = "";
        rows.forEach(function (row) {
          self.o.table.appendChild(self._row(row, row.user === self.view.me));
        });
      }
      var own = self.view.rows("own");
      if (own !== null && self.o.mine) {
        self.o.mine.textContent = "";
        if (own.length) self.o.mine.appendChild(self._row(own[0], true));
      }
      if (self.o.onRender) self.o.onRender(self);
    });
  };

  root.StandingsView = StandingsView;
  root.StandingsBoard = StandingsBoard;
  if (typeof module !== "undefined" && module.exports) {
    module.exports = { StandingsView: StandingsView, StandingsBoard: StandingsBoard };
  }
})(typeof window !== "undefined" ? window : globalThis);
