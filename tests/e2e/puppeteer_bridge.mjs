// Drives Firefox (Debian's firefox-esr) for the Python e2e tests, through puppeteer-core over
// WebDriver BiDi. One JSON command a line on stdin, one JSON answer a line on stdout:
//   {"id": 1, "cmd": "goto", "url": "..."}  ->  {"id": 1, "ok": true, "value": ...}
// tests/e2e/browsers.py wraps it in the few Page methods the tests use.
import readline from "node:readline";
import puppeteer from "puppeteer-core";

const executablePath = process.argv[2] || "/usr/bin/firefox-esr";
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath,
  headless: true,
  protocol: "webDriverBiDi",
  extraPrefsFirefox: {
    // no first-run pages, updates or telemetry: the run stays on loopback
    "browser.shell.checkDefaultBrowser": false,
    "app.update.enabled": false,
    "datareporting.policy.dataSubmissionEnabled": false,
    "toolkit.telemetry.enabled": false,
    "network.captive-portal-service.enabled": false,
  },
});

let context = null;
let page = null;
let errors = [];

// Evaluate an expression in the page; a function expression is called with `arg` (as
// Playwright's page.evaluate does with a string).
function evaluator(expr, arg) {
  const value = (0, eval)("(" + expr + ")");
  return typeof value === "function" ? value(arg) : value;
}

const commands = {
  async newPage() {
    if (context) await context.close();
    context = await browser.createBrowserContext();
    page = await context.newPage();
    await page.setViewport({ width: 1440, height: 900 });
    errors = [];
    page.on("console", (msg) => {
      if (msg.type() === "error") errors.push("console.error: " + msg.text());
    });
    page.on("pageerror", (err) => errors.push("pageerror: " + (err && err.message)));
    return null;
  },
  async goto({ url }) {
    await page.goto(url);
    return null;
  },
  async setContent({ html }) {
    await page.setContent(html);
    return null;
  },
  async evaluate({ expr, arg }) {
    return await page.evaluate(evaluator, expr, arg === undefined ? null : arg);
  },
  async waitFor({ expr, arg, ms }) {
    const handle = await page.waitForFunction(evaluator, { timeout: ms, polling: 100 }, expr, arg === undefined ? null : arg);
    const value = await handle.jsonValue();
    await handle.dispose();
    return value;
  },
  async errors() {
    return errors;
  },
  async clearErrors() {
    errors = [];
    return null;
  },
  async closePage() {
    if (context) await context.close();
    context = page = null;
    return null;
  },
  async version() {
    return await browser.version();
  },
};

// Functions exposed to the page call back into Python: {"callback": name, "args": [...],
// "cb": n} goes out, {"cb": n, "value": ...} comes back while a command is in progress.
const callbacks = new Map();
let nextCallback = 0;
commands.exposeFunction = async ({ name }) => {
  await page.exposeFunction(name, (...args) => {
    const cb = ++nextCallback;
    process.stdout.write(JSON.stringify({ callback: name, args, cb }) + "\n");
    return new Promise((resolve) => callbacks.set(cb, resolve));
  });
  return null;
};

async function run(request) {
  let answer;
  try {
    const value = await commands[request.cmd](request);
    answer = { id: request.id, ok: true, value: value === undefined ? null : value };
  } catch (err) {
    answer = { id: request.id, ok: false, error: String((err && err.stack) || err) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  const request = JSON.parse(line);
  if (request.cmd === "quit") {
    lines.close();
    browser.close().then(() => process.exit(0));
    return;
  }
  if (request.cmd === undefined && callbacks.has(request.cb)) {
    const resolve = callbacks.get(request.cb);
    callbacks.delete(request.cb);
    resolve(request.value);
    return;
  }
  run(request);
});
