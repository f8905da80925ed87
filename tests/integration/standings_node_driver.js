// Drives static/standings.js's StandingsView from JSON lines on stdin (one reply line each),
// so that tests/integration/test_standings_js.py can check it against the board.
"use strict";
const { StandingsView } = require("../../static/standings.js");
const readline = require("readline");

const views = new Map();
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const cmd = JSON.parse(line);
  let out = null;
  const view = views.get(cmd.id);
  switch (cmd.op) {
    case "new": {
      const v = new StandingsView(cmd.me);
      v.followOwn("own");
      v.followPage("page", cmd.start, cmd.size, cmd.margin);
      v.followAround("around", cmd.k);
      views.set(cmd.id, v);
      break;
    }
    case "feed":
      view.feed(cmd.event, 0);
      break;
    case "requests":
      out = view.requests();
      break;
    case "load":
      view.load(cmd.name, cmd.window);
      break;
    case "rows":
      out = view.rows(cmd.name);
      break;
    case "version":
      out = view.tracks[cmd.name].v;
      break;
    default:
      throw new Error("unknown op " + cmd.op);
  }
  process.stdout.write(JSON.stringify({ out }) + "\n");
});
