/* Demo contest page: renders leaderboard:demo and contest:demo through RealtimeClient. */
(function () {
  "use strict";

  var BALLOONS = ["#ef4444", "#f59e0b", "#22c55e", "#3b82f6", "#a855f7", "#ec4899", "#14b8a6", "#f97316"];
  var VERDICT_TEXT = {
    AC: "Accepted",
    WA: "Wrong answer",
    TLE: "Time limit",
    RE: "Runtime error",
    CE: "Compilation error",
  };
  var FEED_MAX = 30;

  // what the end-to-end tests read
  var stats = (window.demoStats = {
    snapshots: 0,
    progress: 0,
    verdicts: 0,
    clock: 0,
    renders: 0,
    moves: 0,
    connected: 0,
  });

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function pad(n) {
    return n < 10 ? "0" + n : String(n);
  }

  function formatDuration(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    return (h ? h + ":" + pad(m) : pad(m)) + ":" + pad(s % 60);
  }

  var rt = new RealtimeClient("/ws");
  window.demoClient = rt;

  // ------------------------------------------------------------ connection status

  var statusBox = document.getElementById("status");
  var statusText = document.getElementById("status-text");
  var everConnected = false;

  function showStatus(state) {
    var text = {
      connecting: everConnected ? "Reconnecting…" : "Connecting…",
      connected: "Live",
      disconnected: "Reconnecting…",
      closed: "Offline",
    }[state];
    statusBox.className = "status status-" + (state === "connecting" && everConnected ? "disconnected" : state);
    statusText.textContent = text || state;
    statusBox.dataset.state = state;
  }

  rt.on("state", showStatus);
  rt.on("connected", function () {
    everConnected = true;
    stats.connected++;
    showStatus("connected");
  });
  rt.on("error", function (err) {
    statusBox.title = err.code + (err.message ? ": " + err.message : "");
  });
  showStatus(rt.state);

  // ------------------------------------------------------------ contest clock

  var clock = null;
  var problems = [];
  var titleEl = document.getElementById("title");
  var phaseEl = document.getElementById("phase");
  var clockEl = document.getElementById("clock");
  var clockLabel = document.getElementById("clock-label");
  var clockBar = document.getElementById("clock-bar");

  function applyClock(data) {
    stats.clock++;
    var newRound = !clock || clock.round !== data.round;
    clock = data;
    titleEl.textContent = data.title;
    document.title = data.title + " · Live standings";
    if (data.problems) setProblems(data.problems);
    if (newRound && data.phase === "running") clearFeed();
    tick();
  }

  function tick() {
    if (!clock) return;
    var now = rt.now();
    var phase = clock.phase;
    if (phase === "running" && now < clock.start) phase = "soon";
    if (phase === "running" && now >= clock.end) phase = "over";
    var label, value, progress;
    if (phase === "soon") {
      label = "Starts in";
      value = clock.start - now;
      progress = 0;
    } else if (phase === "running") {
      label = "Remaining";
      value = clock.end - now;
      progress = (now - clock.start) / (clock.end - clock.start);
    } else {
      label = clock.next_start ? "Next round in" : "Contest over";
      value = clock.next_start ? clock.next_start - now : 0;
      progress = 1;
    }
    clockLabel.textContent = label;
    clockEl.textContent = formatDuration(value);
    clockBar.style.width = (Math.min(Math.max(progress, 0), 1) * 100).toFixed(2) + "%";
    phaseEl.textContent = phase === "running" ? "running" : phase === "soon" ? "starting" : "final";
    phaseEl.className = "phase phase-" + (phase === "running" ? "running" : phase === "soon" ? "wait" : "over");
  }

  setInterval(tick, 250);

  // ------------------------------------------------------------ standings (FLIP rows)

  var headEl = document.getElementById("board-head");
  var bodyEl = document.getElementById("board-body");
  var metaEl = document.getElementById("board-meta");
  var rowsByUser = new Map();
  var pendingBoard = null;
  var boardFrame = 0;

  function problemName(id) {
    for (var i = 0; i < problems.length; i++) if (problems[i].id === id) return problems[i].name || id;
    return id;
  }

  function balloonColor(id) {
    var i = id.charCodeAt(0) - 65;
    return BALLOONS[((i % BALLOONS.length) + BALLOONS.length) % BALLOONS.length];
  }

  function setProblems(list) {
    var ids = list.map(function (p) {
      return typeof p === "string" ? p : p.id;
    });
    var same =
      problems.length === ids.length &&
      problems.every(function (p, i) {
        return p.id === ids[i];
      });
    problems = list.map(function (p) {
      return typeof p === "string" ? { id: p, name: problemName(p) } : p;
    });
    if (same && headEl.childElementCount) return;
    document.documentElement.style.setProperty("--problems", String(problems.length));
    headEl.textContent = "";
    headEl.appendChild(el("div", "col-rank", "#"));
    headEl.appendChild(el("div", "col-name", "Contestant"));
    headEl.appendChild(el("div", "col-solved", "Solved"));
    headEl.appendChild(el("div", "col-penalty", "Penalty"));
    problems.forEach(function (p) {
      var h = el("div", "problem-head");
      var b = el("span", "balloon");
      b.style.background = balloonColor(p.id);
      h.appendChild(b);
      h.appendChild(el("span", null, p.id));
      h.title = p.name || p.id;
      headEl.appendChild(h);
    });
    rowsByUser.forEach(function (row) {
      row.remove();
    });
    rowsByUser.clear();
  }

  function makeRow() {
    var row = el("div", "board-row");
    row.setAttribute("role", "row");
    row._rank = el("div", "col-rank");
    row._name = el("div", "col-name");
    row._who = el("span", "who");
    row._org = el("span", "org");
    row._name.appendChild(row._who);
    row._name.appendChild(row._org);
    row._solved = el("div", "col-solved");
    row._penalty = el("div", "col-penalty");
    row.appendChild(row._rank);
    row.appendChild(row._name);
    row.appendChild(row._solved);
    row.appendChild(row._penalty);
    row._cells = problems.map(function () {
      var wrap = el("div");
      var cell = el("div", "cell");
      wrap.appendChild(cell);
      row.appendChild(wrap);
      return cell;
    });
    row._keys = [];
    return row;
  }

  function fillCell(node, data, previousKey) {
    var key = data ? [data.solved, data.minute, data.rejected, data.pending, data.first].join("|") : "";
    if (key === previousKey) return key;
    node.className = "cell";
    node.textContent = "";
    if (!data) return key;
    if (data.solved) {
      node.classList.add(data.first ? "cell-first" : "cell-solved");
      node.appendChild(document.createTextNode(data.rejected ? "+" + data.rejected : "+"));
      node.appendChild(el("small", null, data.minute + "′"));
      if (previousKey && previousKey.split("|")[0] !== "true") {
        node.classList.add("flash");
      }
      node.title = "Accepted at minute " + data.minute + (data.rejected ? " after " + data.rejected + " rejected" : "");
    } else if (data.pending) {
      node.classList.add("cell-pending");
      node.appendChild(document.createTextNode("?"));
      if (data.rejected) node.appendChild(el("small", null, "−" + data.rejected));
      node.title = "Being judged";
    } else if (data.rejected) {
      node.classList.add("cell-rejected");
      node.appendChild(document.createTextNode("−" + data.rejected));
      node.title = data.rejected + " rejected";
    } else {
      node.title = "";
    }
    return key;
  }

  function renderBoard(data) {
    stats.renders++;
    if (data.problems) setProblems(data.problems);
    var rows = data.rows || [];
    var empty = bodyEl.querySelector(".board-empty");
    if (empty && rows.length) empty.remove();

    // FLIP, First: where every row is now
    var before = new Map();
    rowsByUser.forEach(function (row, user) {
      before.set(user, row.getBoundingClientRect().top);
    });

    var seen = new Set();
    var cursor = bodyEl.firstElementChild;
    var rankBefore = new Map();
    rowsByUser.forEach(function (row, user) {
      rankBefore.set(user, row._position);
    });
    rows.forEach(function (r, position) {
      seen.add(r.user);
      var row = rowsByUser.get(r.user);
      if (!row) {
        row = makeRow();
        row.dataset.user = r.user;
        rowsByUser.set(r.user, row);
      }
      row._position = position;
      row._rank.textContent = r.rank;
      row._rank.className = "col-rank" + (r.rank <= 3 && r.solved > 0 ? " top" + r.rank : "");
      row._who.textContent = r.name;
      row._org.textContent = r.affiliation || "";
      row._solved.textContent = r.solved;
      row._penalty.textContent = r.penalty;
      problems.forEach(function (p, i) {
        if (!row._cells[i]) return;
        row._keys[i] = fillCell(row._cells[i], r.cells ? r.cells[p.id] : null, row._keys[i]);
      });
      // Last: the DOM order becomes the new ranking (rows already in place are not touched,
      // so that their running animations go on)
      if (row === cursor) cursor = cursor.nextElementSibling;
      else bodyEl.insertBefore(row, cursor);
    });
    rowsByUser.forEach(function (row, user) {
      if (!seen.has(user)) {
        row.remove();
        rowsByUser.delete(user);
      }
    });

    // measure the new layout without any transform still in flight from the last update
    rowsByUser.forEach(function (row) {
      row.style.transition = "none";
      row.style.transform = "";
    });
    // Invert, Play: start each moved row where it was seen, then let it glide to its place
    var moved = [];
    rowsByUser.forEach(function (row, user) {
      if (!before.has(user)) return;
      var dy = before.get(user) - row.getBoundingClientRect().top;
      if (Math.abs(dy) < 1) return;
      row.style.transform = "translateY(" + dy + "px)";
      moved.push(row);
      if (rankBefore.get(user) > row._position) {
        row.classList.remove("rising");
        void row.offsetWidth;
        row.classList.add("rising");
      }
    });
    if (moved.length) {
      stats.moves += moved.length;
      void bodyEl.offsetHeight; // commit the inverted positions before animating
      moved.forEach(function (row) {
        row.style.transition = "transform 700ms cubic-bezier(0.2, 0.8, 0.2, 1)";
        row.style.transform = "";
      });
    }
    metaEl.textContent = rows.length + " contestants · updated " + new Date(data.updated || rt.now()).toLocaleTimeString();
  }

  function queueBoard(data) {
    stats.snapshots++;
    // latest wins: a burst of snapshots (e.g. replayed after a reconnect) renders once
    pendingBoard = data;
    if (boardFrame) return;
    boardFrame = requestAnimationFrame(function () {
      boardFrame = 0;
      var next = pendingBoard;
      pendingBoard = null;
      if (next) renderBoard(next);
    });
  }

  // ------------------------------------------------------------ submissions feed

  var feedEl = document.getElementById("feed");
  var feedCount = document.getElementById("feed-rate");
  var items = new Map();
  var judged = 0;

  function clearFeed() {
    items.clear();
    feedEl.textContent = "";
  }

  function feedItem(d) {
    var item = items.get(d.id);
    if (item) return item;
    item = el("li", "sub");
    item.dataset.id = d.id;
    var prob = el("div", "sub-prob", d.problem);
    prob.style.background = balloonColor(d.problem);
    item.appendChild(prob);
    prob.title = d.problem + ". " + problemName(d.problem);
    item.appendChild(el("div", "sub-who", d.name));
    item.appendChild(el("div", "sub-meta", "#" + d.id + " · " + d.language + " · minute " + d.submitted_minute));
    item._verdict = el("div", "sub-verdict");
    item._badge = el("span", "badge");
    item._verdict.appendChild(item._badge);
    item.appendChild(item._verdict);
    var bar = el("div", "sub-bar");
    item._bar = el("i");
    bar.appendChild(item._bar);
    item.appendChild(bar);
    items.set(d.id, item);
    feedEl.insertBefore(item, feedEl.firstChild);
    while (feedEl.childElementCount > FEED_MAX) {
      var last = feedEl.lastElementChild;
      items.delete(Number(last.dataset.id));
      last.remove();
    }
    return item;
  }

  function onProgress(d) {
    stats.progress++;
    var item = feedItem(d);
    if (item.classList.contains("done")) return;
    if (d.status === "compiling") {
      item._badge.className = "badge badge-compiling";
      item._badge.textContent = "Compiling";
      item._bar.style.width = "4%";
    } else {
      item._badge.className = "badge badge-running";
      item._badge.textContent = "Test " + d.test + "/" + d.tests;
      item._bar.style.width = ((100 * d.test) / d.tests).toFixed(1) + "%";
    }
  }

  function onVerdict(d) {
    stats.verdicts++;
    judged++;
    feedCount.textContent = judged;
    var item = feedItem(d);
    item.classList.add("done", "verdict-in");
    if (d.verdict !== "AC") item.classList.add("failed");
    item.dataset.verdict = d.verdict;
    item._badge.className = "badge badge-" + d.verdict;
    var text = VERDICT_TEXT[d.verdict] || d.verdict;
    if (d.verdict === "AC") text += " · " + d.time_ms + " ms";
    else if (d.verdict !== "CE") text = d.verdict + " on test " + d.test;
    item._badge.textContent = text;
    item._badge.title = (VERDICT_TEXT[d.verdict] || d.verdict) + (d.verdict === "CE" ? "" : ", " + d.time_ms + " ms, " + Math.round(d.memory_kb / 1024) + " MB");
    item._bar.style.width = d.verdict === "CE" ? "100%" : ((100 * d.test) / d.tests).toFixed(1) + "%";
  }

  // ------------------------------------------------------------ subscriptions

  var BACKFILL = 80; // events of recent history to replay into an empty feed
  var backfilled = false;

  function contestHandlers() {
    return {
      onState: function (event) {
        if (event && event.type === "contest.clock") applyClock(event.data);
        if (!backfilled) backfill(this);
      },
      onEvent: function (event) {
        if (event.type === "submission.progress") onProgress(event.data);
        else if (event.type === "submission.verdict") onVerdict(event.data);
        else if (event.type === "contest.clock") applyClock(event.data);
      },
    };
  }

  // A fresh page has an empty feed. The server keeps recent history, so subscribe again
  // from a position a little in the past: the `missed` replay fills the feed at once.
  function backfill(sub) {
    backfilled = true;
    var position = sub.position;
    if (!position || position.offset === 0) return;
    sub.unsubscribe();
    var handlers = contestHandlers();
    handlers.since = { epoch: position.epoch, offset: Math.max(0, position.offset - BACKFILL) };
    rt.subscribe("contest:demo", handlers);
  }

  rt.subscribe("contest:demo", contestHandlers());

  rt.subscribe("leaderboard:demo", {
    onState: function (event) {
      if (event && event.type === "leaderboard.snapshot") queueBoard(event.data);
    },
    onEvent: function (event) {
      if (event.type === "leaderboard.snapshot") queueBoard(event.data);
    },
  });
})();
