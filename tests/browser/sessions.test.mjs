// End-to-end tests of the playground's session mode (cells sharing one /v1/sessions session),
// of output streamed as it is printed in both modes, and of rich outputs shown inline and
// safely, in headless Chromium against a real `pybox serve` that this file starts (lib.mjs).
//
//   PYBOX=build/pybox node --test tests/browser/sessions.test.mjs
//
// Env: see lib.mjs. Every wait is for a condition, with a deadline.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { startServer, stopServer, launch, watchConsole, lowContrast, tmpdirs } from "./lib.mjs";

const { tmp: TMP, out: OUT } = tmpdirs();
const ADMIN_KEY = "adm-" + Math.random().toString(16).slice(2) + Date.now().toString(16);
const LONG = { timeout: 60000 };        // a deadline for waits that include an import of matplotlib or pandas

let server = null;
let serverLog = () => "";
let base = null;
let browser = null;
let context = null;
let page = null;
const consoleErrors = [];
const frameErrors = [];                 // what sandboxed HTML outputs were refused

before(async () => {
  // Rates and quotas high enough for every call here; memory for pandas and matplotlib in one session.
  const srv = await startServer(TMP, ADMIN_KEY, ["--no-preload", "--rpm", "1000", "--rpd", "100000",
    "--memory", "768", "--timeout", "20", "--sessions", "16:16:64"]);
  server = srv.child;
  serverLog = srv.log;
  base = srv.base;
  browser = await launch();
  context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "light" });
  page = await context.newPage();
  watchConsole(page, consoleErrors, frameErrors);
  await page.goto(base + "/");
});

after(async () => {
  if (browser) await browser.close();
  if (server && server.exitCode === null) server.kill("SIGKILL");
});

const cells = () => page.locator("#cells > li.cell");
const cell = (i) => cells().nth(i);

/* Wait until cell `i` has finished (its state "done"). */
function cellDone(i, opts) {
  return page.waitForFunction((k) => {
    const li = document.querySelectorAll("#cells > li.cell")[k];
    return li !== undefined && li.dataset.state === "done";
  }, i, opts || LONG);
}

/* Put `code` in cell `i` (adding cells up to it), run it with its Run button, wait for it. */
async function runCell(i, code, opts) {
  while (await cells().count() <= i) await page.click("#add-cell");
  await cell(i).locator("textarea").fill(code);
  await cell(i).locator("button.cell-run").click();
  await cellDone(i, opts);
  return cell(i);
}

async function outputText(i) {
  return cell(i).locator(".cell-output").textContent();
}

async function sessionId() {
  return (await page.locator("#session-state .session-id").textContent()).trim();
}

/* The browser's own notes on refused requests (404, 409, 410) are expected; nothing else. */
function unexpectedErrors() {
  return consoleErrors.filter((e) => !/Failed to load resource: the server responded with a status of (404|409|410)/.test(e));
}

test("the mode toggle shows the session's cells in place of the single run", async () => {
  assert.equal(await page.locator("#single-mode").isVisible(), true);
  assert.equal(await page.locator("#session-mode").isHidden(), true);
  await page.check("#mode-session");
  await page.locator("#session-mode").waitFor();
  assert.equal(await page.locator("#single-mode").isHidden(), true);
  assert.match(await page.locator("#session-state").textContent(), /No session yet/);
  assert.equal(await cells().count(), 1);
  assert.equal(await cell(0).locator(".cell-count").textContent(), "[ ]");
  assert.equal(await page.locator("#session-restart").isDisabled(), true);
  assert.equal(await page.locator("#session-end").isDisabled(), true);
  assert.equal(await page.locator("#session-interrupt").isHidden(), true);
  // Labels, and outputs announced as they come.
  const unlabelled = await page.evaluate(() => Array.from(document.querySelectorAll("#playground input, #playground textarea, #playground button"))
    .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute("aria-label") && !(c.textContent || "").trim())
    .map((c) => c.id || c.className));
  assert.deepEqual(unlabelled, []);
  assert.equal(await cell(0).locator(".cell-output").getAttribute("aria-live"), "polite");
  assert.equal(await page.locator("#session-state").getAttribute("aria-live"), "polite");
  assert.deepEqual(await lowContrast(page), [], "text under 4.5:1 contrast (session mode)");
  assert.deepEqual(unexpectedErrors(), []);
});

test("cells share state: x = 41, then x + 1 shows 42 as [2] (Shift+Enter runs and moves on)", async () => {
  await cell(0).locator("textarea").fill("x = 41");
  await cell(0).locator("textarea").focus();
  await page.keyboard.press("Shift+Enter");
  // Shift+Enter made a second cell and moved there; it is typed and run while the first may still run.
  assert.equal(await cells().count(), 2);
  assert.equal(await page.evaluate(() => document.activeElement.closest("li.cell") === document.querySelectorAll("#cells > li.cell")[1]), true);
  await page.keyboard.type("x + 1");
  await page.keyboard.press("Shift+Enter");
  await cellDone(0);
  await cellDone(1);
  assert.equal(await cell(0).locator(".cell-count").textContent(), "[1]");
  assert.equal(await cell(1).locator(".cell-count").textContent(), "[2]");
  assert.equal((await cell(1).locator(".output-result").textContent()).trim(), "42");
  const id = await sessionId();
  assert.match(id, /^ses_[0-9a-f]{32}$/);
  assert.match(await page.locator("#session-state").textContent(), /— idle/);
  assert.equal(await page.locator("#session-restart").isEnabled(), true);
  assert.equal(await page.locator("#session-end").isEnabled(), true);
  assert.deepEqual(unexpectedErrors(), []);
});

test("output streams: the first line shows while the cell still runs, before the second is printed", async () => {
  while (await cells().count() <= 2) await page.click("#add-cell");
  await cell(2).locator("textarea").fill('import time\nprint("first", flush=True)\ntime.sleep(0.5)\nprint("second", flush=True)');
  await cell(2).locator("button.cell-run").click();
  await page.waitForFunction(() => {
    const li = document.querySelectorAll("#cells > li.cell")[2];
    const text = li.querySelector(".cell-output").textContent;
    return li.dataset.state === "running" && text.includes("first") && !text.includes("second");
  }, null, LONG);
  assert.equal(await cell(2).locator(".cell-count").textContent(), "[*]");
  assert.equal(await page.locator("#session-interrupt").isVisible(), true, "no Interrupt button while a cell runs");
  await cellDone(2);
  assert.equal(await cell(2).locator("pre.cell-stdout").textContent(), "first\nsecond\n");
  assert.equal(await cell(2).locator(".cell-count").textContent(), "[3]");
  assert.equal(await page.locator("#session-interrupt").isHidden(), true);
});

test("a matplotlib chart shows inline as an image", async () => {
  await runCell(3, "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()");
  const img = cell(3).locator(".cell-output img");
  await img.waitFor();
  await page.waitForFunction(() => {
    const i = document.querySelectorAll("#cells > li.cell")[3].querySelector(".cell-output img");
    return i && i.complete && i.naturalWidth > 0;
  }, null, LONG);
  assert.match(await img.getAttribute("src"), /^data:image\/png;base64,iVBOR/);
  assert.deepEqual(await img.evaluate((i) => [i.naturalWidth, i.naturalHeight]), [640, 480]);
  assert.match(await img.getAttribute("alt"), /Figure/);
});

test("a pandas DataFrame shows as a table inside a sandboxed frame", async () => {
  await runCell(4, 'import pandas as pd\npd.DataFrame({"a": [1, 2], "b": [3, 4]})');
  const frame = cell(4).locator(".cell-output iframe.html-output");
  await frame.waitFor();
  assert.equal(await frame.getAttribute("sandbox"), "", "the frame must have sandbox with no permissions");
  assert.equal(await cell(4).locator(".output-result iframe").count(), 1);
  // Another origin: the page cannot reach into it, nor it into the page.
  assert.equal(await frame.evaluate((f) => f.contentDocument === null), true);
  const doc = await (await frame.elementHandle()).contentFrame();
  await doc.waitForLoadState("load");
  assert.deepEqual(await doc.locator("table td").allTextContents(), ["1", "3", "2", "4"]);
  assert.deepEqual(await doc.locator("table thead th").allTextContents(), ["", "a", "b"]);
  const height = await frame.evaluate((f) => f.getBoundingClientRect().height);
  assert.ok(height >= 60 && height <= 422, `the frame is ${height}px high`);
  await page.locator("#session-mode").screenshot({ path: path.join(OUT, "browser-session.png") });
});

test("HTML and SVG outputs with scripts and event handlers run none of them", async () => {
  const code = [
    "from IPython.display import display, HTML, SVG",
    "display(HTML('<p id=\"hi\">hello</p>'",
    "             '<script>document.body.dataset.ran = \"script\"; parent.pwned = 1; top.pwned = 1</script>'",
    "             '<img id=\"bad\" src=\"/nope.png\" onerror=\"document.body.dataset.ran = 1; parent.pwned = 2\">'))",
    "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"20\" height=\"10\" onload=\"parent.pwned = 3\">'",
    "            '<script>parent.pwned = 4</script><rect width=\"20\" height=\"10\" fill=\"red\"/></svg>'))",
  ].join("\n");
  await page.evaluate(() => { window.scriptsBefore = document.scripts.length; });
  const out = await runCell(5, code);
  const frame = out.locator("iframe.html-output");
  await frame.waitFor();
  const doc = await (await frame.elementHandle()).contentFrame();
  await doc.waitForLoadState("load");
  // The markup is there, inert: its script and its handler never ran.
  assert.equal(await doc.locator("#hi").textContent(), "hello");
  assert.equal(await doc.locator("img#bad[onerror]").count(), 1);
  assert.equal(await doc.locator("body").getAttribute("data-ran"), null);
  const svg = out.locator('img[src^="data:image/svg+xml"]');
  await page.waitForFunction(() => {
    const i = document.querySelectorAll("#cells > li.cell")[5].querySelector('img[src^="data:image/svg+xml"]');
    return i && i.complete && i.naturalWidth > 0;
  }, null, LONG);
  assert.equal(await svg.count(), 1);
  // Nothing of the outputs entered the page itself.
  const page_ = await page.evaluate(() => ({
    pwned: window.pwned,
    scripts: document.scripts.length - window.scriptsBefore,
    handlers: document.querySelectorAll("[onerror], [onload]").length,
    svg: document.querySelectorAll("svg").length,
    hi: document.getElementById("hi"),
  }));
  assert.deepEqual(page_, { pwned: undefined, scripts: 0, handlers: 0, svg: 0, hi: null });
  assert.ok(frameErrors.some((e) => /sandboxed and the 'allow-scripts' permission is not set/.test(e)),
    `the frame's script was not refused as sandboxed: ${JSON.stringify(frameErrors)}`);
  assert.deepEqual(unexpectedErrors(), []);
});

test("restart clears the state: x is a NameError afterwards, and numbering starts again", async () => {
  const id = await sessionId();
  await page.click("#session-restart");
  await page.waitForFunction(() => /Restarted/.test(document.getElementById("session-message").textContent));
  await page.waitForFunction(() => /— idle/.test(document.getElementById("session-state").textContent));
  assert.equal(await sessionId(), id, "a restart keeps the session");
  await runCell(6, "x");
  const text = await outputText(6);
  assert.match(text, /NameError: name 'x' is not defined/);
  assert.equal(await cell(6).locator(".cell-count").textContent(), "[1]");
  assert.equal(await cell(6).locator("pre.cell-stderr").count(), 1, "the traceback is shown as stderr");
});

test("interrupt stops a time.sleep(30) cell, and the session keeps working", async () => {
  await runCell(7, "y = 5");
  while (await cells().count() <= 8) await page.click("#add-cell");
  await cell(8).locator("textarea").fill('import time\nprint("sleeping", flush=True)\ntime.sleep(30)');
  const t0 = Date.now();
  await cell(8).locator("button.cell-run").click();
  await page.waitForFunction(() => {
    const li = document.querySelectorAll("#cells > li.cell")[8];
    return li.dataset.state === "running" && li.querySelector(".cell-output").textContent.includes("sleeping");
  }, null, LONG);
  await page.click("#session-interrupt");
  await cellDone(8, { timeout: 15000 });
  assert.ok(Date.now() - t0 < 15000, "the cell ran on after the interrupt");
  assert.match(await outputText(8), /KeyboardInterrupt/);
  assert.match(await outputText(8), /The session kept its state/);
  assert.equal(await cell(8).locator(".cell-count").textContent(), "[3]");
  await runCell(9, 'print("still here", y)');
  assert.equal(await cell(9).locator("pre.cell-stdout").textContent(), "still here 5\n");
  assert.equal(await cell(9).locator(".cell-count").textContent(), "[4]");
  assert.match(await page.locator("#session-state").textContent(), /— idle/);
});

test("a call while another of the session runs is refused with 409, said clearly", async () => {
  const id = await sessionId();
  const url = base + "/v1/sessions/" + id;
  // Another client of the same caller (this address) holds the session with a call of its own.
  const other = fetch(url + "/execute", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: "import time\ntime.sleep(3)" }) });
  const deadline = Date.now() + 15000;
  for (;;) {
    const st = await (await fetch(url)).json();
    if (st.status === "busy") break;
    assert.ok(Date.now() < deadline, "the other call never made the session busy");
    await new Promise((r) => setTimeout(r, 50));
  }
  await runCell(10, "print('mine')");
  const text = await outputText(10);
  assert.match(text, /The session is busy \(SessionBusy\): another call of this session is running/);
  assert.equal(await cell(10).locator(".cell-count").textContent(), "[ ]");
  assert.equal((await (await other).json()).status, "ok");
  // Once it is over the same cell runs.
  await cell(10).locator("button.cell-run").click();
  await cellDone(10);
  assert.equal(await cell(10).locator("pre.cell-stdout").textContent(), "mine\n");
});

test("a session that dies says why, and a new one can be started", async () => {
  const first = await sessionId();
  // The memory limit (768 MiB) kills the call, and the session with it.
  await runCell(11, "b = bytearray(1024 * 2**20)");
  assert.match(await outputText(11), /memory/i);
  await page.waitForFunction(() => /ended: .*\(memory_limit\)/.test(document.getElementById("session-state").textContent));
  assert.equal(await page.locator("#session-new").isVisible(), true);
  assert.equal(await page.locator("#session-restart").isDisabled(), true);
  assert.match(await page.locator("#session-message").textContent(), /Start a new session/);
  // A cell asked now is not sent to the dead session.
  await runCell(12, "print(1)");
  assert.match(await outputText(12), /Not run: the session has ended \(memory_limit\)/);
  await page.click("#session-new");
  await page.waitForFunction((old) => {
    const c = document.querySelector("#session-state .session-id");
    return c !== null && c.textContent !== old;
  }, first);
  assert.equal(await page.locator("#session-new").isHidden(), true);
  await cell(12).locator("button.cell-run").click();
  await cellDone(12);
  assert.equal(await cell(12).locator("pre.cell-stdout").textContent(), "1\n");
  assert.equal(await cell(12).locator(".cell-count").textContent(), "[1]");
});

test("a session that died elsewhere is a 410 with its reason and a way on", async () => {
  const id = await sessionId();
  const r = await fetch(base + "/v1/sessions/" + id + "/execute", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: "b = bytearray(1024 * 2**20)" }) });
  assert.equal((await r.json()).session.status, "dead");
  await runCell(13, "print(2)");
  const text = await outputText(13);
  assert.match(text, /The session has ended \(SessionDead\): a call used more than the memory limit \(memory_limit\)/);
  assert.equal(await page.locator("#session-new").isVisible(), true);
  assert.match(await page.locator("#session-state").textContent(), /ended: .*\(memory_limit\)/);
  await page.click("#session-new");
  await page.waitForFunction((old) => {
    const c = document.querySelector("#session-state .session-id");
    return c !== null && c.textContent !== old;
  }, id);
});

test("a session the server no longer has (404, as after its restart) is said so, with a way on", async () => {
  const id = await sessionId();
  // The server's own 404 for a session of an earlier run, without restarting this one.
  const gone = base + "/v1/sessions/" + id + "/execute";
  await page.route(gone, (route) => route.fulfill({
    status: 404, headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ status: "error", timestamp_utc: "2026-01-01T00:00:00.000Z",
      error_details: { type: "NotFound", message: "no such session: sessions end when the server restarts" },
      error: { type: "NotFound", message: "no such session: sessions end when the server restarts" }, request_id: "test-2" }),
  }));
  await runCell(14, "print(4)");
  await page.unroute(gone);
  assert.match(await outputText(14), /The session is gone \(NotFound\): no such session: sessions end when the server restarts/);
  assert.match(await page.locator("#session-state").textContent(), /ended: the server no longer has it/);
  await page.click("#session-new");
  await page.waitForFunction((old) => {
    const c = document.querySelector("#session-state .session-id");
    return c !== null && c.textContent !== old;
  }, id);
  await cell(14).locator("button.cell-run").click();
  await cellDone(14);
  assert.equal(await cell(14).locator("pre.cell-stdout").textContent(), "4\n");
});

test("End session deletes it on the server; the next cell opens a new one", async () => {
  const id = await sessionId();
  await page.click("#session-end");
  await page.waitForFunction(() => /No session yet/.test(document.getElementById("session-state").textContent));
  assert.match(await page.locator("#session-message").textContent(), /Session ended/);
  const st = await fetch(base + "/v1/sessions/" + id);
  if (st.status === 200) assert.equal((await st.json()).status, "dead");
  else assert.equal(st.status, 404);
  await runCell(15, "print(3)");
  assert.equal(await cell(15).locator("pre.cell-stdout").textContent(), "3\n");
  assert.notEqual(await sessionId(), id);
  assert.deepEqual(unexpectedErrors(), []);
});

test("single run: output streams as it is printed, a chart and a table show inline, Stop cancels", async () => {
  await page.check("#mode-single");
  await page.locator("#single-mode").waitFor();
  assert.equal(await page.locator("#session-mode").isHidden(), true);
  await page.fill("#code", 'import time\nprint("first", flush=True)\ntime.sleep(0.5)\nprint("second", flush=True)');
  await page.click("#run");
  await page.waitForFunction(() => {
    const t = document.getElementById("stdout").textContent;
    return !document.getElementById("busy").hidden && t.includes("first") && !t.includes("second");
  }, null, LONG);
  await page.waitForFunction(() => document.getElementById("busy").hidden, null, LONG);
  assert.equal(await page.locator("#stdout").textContent(), "first\nsecond\n");
  assert.match(await page.locator("#r-status").textContent(), /\(ok\)/);

  await page.fill("#code", "import matplotlib.pyplot as plt\nplt.plot([3, 1, 2])\nplt.show()");
  await page.click("#run");
  await page.waitForFunction(() => {
    const i = document.querySelector("#outputs img");
    return document.getElementById("busy").hidden && i && i.complete && i.naturalWidth > 0;
  }, null, LONG);
  assert.match(await page.locator("#outputs img").getAttribute("src"), /^data:image\/png;base64,/);
  assert.equal(await page.locator("#outputs-wrap").isVisible(), true);

  // The examples' table: a DataFrame, in a sandboxed frame here too.
  await page.selectOption("#example", "table");
  await page.click("#load");
  await page.click("#run");
  await page.waitForFunction(() => document.getElementById("busy").hidden && document.querySelector("#outputs iframe") !== null, null, LONG);
  assert.equal(await page.locator("#outputs iframe").getAttribute("sandbox"), "");
  const doc = await (await page.locator("#outputs iframe").elementHandle()).contentFrame();
  await doc.waitForLoadState("load");
  assert.deepEqual(await doc.locator("table tbody td").allTextContents(), ["Oslo", "4.5", "Lima", "19.0", "Pune", "27.5"]);

  await page.fill("#code", 'import time\nprint("waiting", flush=True)\ntime.sleep(30)');
  await page.click("#run");
  await page.waitForFunction(() => document.getElementById("stdout").textContent.includes("waiting"), null, LONG);
  await page.click("#stop");
  await page.waitForFunction(() => document.getElementById("busy").hidden, null, { timeout: 10000 });
  assert.match(await page.locator("#message").textContent(), /Stopped/);
  assert.equal(await page.locator("#run").isEnabled(), true);
  assert.deepEqual(unexpectedErrors(), []);
});

test("phone-sized and dark: session mode fits and keeps its contrast", async () => {
  const phone = await browser.newContext({ viewport: { width: 375, height: 740 }, colorScheme: "dark", deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const p = await phone.newPage();
  const errors = [];
  watchConsole(p, errors);
  await p.goto(base + "/");
  await p.check("#mode-session");
  await p.locator("#cells li.cell textarea").fill('print("phone")\n{"a": [1, 2]}');
  await p.click("#cells li.cell button.cell-run");
  await p.waitForFunction(() => document.querySelector("#cells li.cell").dataset.state === "done", null, LONG);
  assert.equal(await p.locator("#cells li.cell pre.cell-stdout").textContent(), "phone\n");
  assert.match(await p.locator("#cells li.cell .output-result").textContent(), /'a': \[1, 2\]/);
  const width = await p.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 375, `the page is ${width}px wide on a 375px screen`);
  assert.deepEqual(await lowContrast(p), [], "text under 4.5:1 contrast (dark, session mode)");
  await p.locator("#playground").screenshot({ path: path.join(OUT, "browser-session-phone-dark.png") });
  await p.click("#session-end");
  await p.waitForFunction(() => /No session yet/.test(document.getElementById("session-state").textContent));
  assert.deepEqual(errors, []);
  await phone.close();
});

test("the server stops cleanly on SIGTERM", async () => {
  const [code, signal] = await stopServer(server);
  assert.equal(signal, null);
  assert.equal(code, 0, `pybox serve exit ${code}:\n${serverLog().slice(-3000)}`);
  fs.rmSync(path.join(TMP, "data"), { recursive: true, force: true });
});
