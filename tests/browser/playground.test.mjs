// End-to-end tests of the docs page, the playground's single run and the API reference, in
// headless Chromium (Debian's, driven by playwright-core) against a real `pybox serve` that this
// file starts (lib.mjs; its session mode is sessions.test.mjs).
//
//   PYBOX=build/pybox node --test tests/browser/playground.test.mjs
//
// Env: see lib.mjs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { startServer, stopServer, launch, watchConsole, lowContrast, tmpdirs } from "./lib.mjs";

const { tmp: TMP, out: OUT } = tmpdirs();
const ADMIN_KEY = "adm-" + Math.random().toString(16).slice(2) + Date.now().toString(16);
// Non-default limits, so the page is seen to read them from the server.
const RPM = 9;
const TIMEOUT_S = 7;

let server = null;      // the pybox serve child
let serverLog = () => "";
let base = null;        // http://127.0.0.1:PORT
let browser = null;
let context = null;     // desktop, light
let page = null;
const consoleErrors = [];

before(async () => {
  const srv = await startServer(TMP, ADMIN_KEY, ["--no-preload", "--rpm", String(RPM), "--timeout", String(TIMEOUT_S)]);
  server = srv.child;
  serverLog = srv.log;
  base = srv.base;
  browser = await launch();
  context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "light", acceptDownloads: true });
  page = await context.newPage();
  watchConsole(page, consoleErrors);
});

after(async () => {
  if (browser) await browser.close();
  if (server && server.exitCode === null) server.kill("SIGKILL");
});

/* Click Run (or press the given key) and wait until the playground shows the outcome. */
async function run(p, how) {
  const response = p.waitForResponse((r) => r.url() === base + "/v1/execute");
  if (how) await p.keyboard.press(how);
  else await p.click("#run");
  const r = await response;
  await p.waitForFunction(() => !document.getElementById("run").disabled &&
    document.getElementById("busy").hidden);
  return r;
}

async function setCode(p, code) {
  await p.fill("#code", code);
}

async function text(p, sel) {
  return p.locator(sel).textContent();
}

test("the page loads with no console errors and shows the limits in force", async () => {
  const resp = await page.goto(base + "/");
  assert.equal(resp.status(), 200);
  const h = resp.headers();
  assert.match(h["content-type"], /^text\/html/);
  assert.match(h["content-security-policy"], /script-src 'self'/);
  assert.equal(h["x-content-type-options"], "nosniff");
  assert.ok(h.etag, "no ETag on /");
  await page.waitForSelector("#modules li:has-text('numpy')");
  const limits = Object.fromEntries(await page.$$eval("#limits-table tbody tr",
    (rows) => rows.map((r) => [r.cells[0].textContent, r.cells[1].textContent])));
  assert.equal(limits["Wall time per execution"], `${TIMEOUT_S} s`);
  assert.equal(limits["Requests per minute"], String(RPM));
  assert.equal(limits["Requests per day (UTC)"], "30");
  assert.equal(limits["Network"], "none");
  // The examples use the page's own origin.
  const origins = await page.locator("pre.example .origin").allTextContents();
  assert.ok(origins.length >= 3);
  for (const o of origins) assert.equal(o, base);
  assert.equal(await page.title(), "pybox — run untrusted Python safely");
  assert.deepEqual(consoleErrors, [], "console errors on load");
  assert.deepEqual(await lowContrast(page), [], "text under 4.5:1 contrast (light)");
  await page.screenshot({ path: path.join(OUT, "browser-home.png"), fullPage: false });
});

test("every control has a label", async () => {
  const unlabelled = await page.evaluate(() => Array.from(document.querySelectorAll("input, textarea, select, button"))
    .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute("aria-label") && !(c.textContent || "").trim())
    .map((c) => c.id || c.outerHTML.slice(0, 60)));
  assert.deepEqual(unlabelled, []);
});

test("print(1) runs and shows 1", async () => {
  await setCode(page, "print(1)");
  const r = await run(page);
  assert.equal(r.status(), 200);
  assert.equal(await text(page, "#stdout"), "1\n");
  assert.match(await text(page, "#r-status"), /\(ok\)/);
  assert.equal(await text(page, "#r-exit"), "0");
  assert.match(await text(page, "#r-duration"), /\d+(\.\d)? ms/);
  assert.equal(await text(page, "#stderr"), "(empty)");
  assert.deepEqual(consoleErrors, []);
});

test("keyboard: Enter keeps the indentation, Tab inserts spaces, Ctrl+Enter runs, Esc then Tab leaves", async () => {
  await setCode(page, "");
  await page.focus("#code");
  await page.keyboard.type("for i in range(2):");
  await page.keyboard.press("Enter");
  await page.keyboard.type("print(i)");
  assert.equal(await page.inputValue("#code"), "for i in range(2):\n    print(i)");
  await page.keyboard.press("Enter");
  await page.keyboard.press("Shift+Tab");
  await page.keyboard.type("x = 1");
  await page.keyboard.press("Tab");
  assert.equal(await page.inputValue("#code"), "for i in range(2):\n    print(i)\nx = 1    ");
  assert.equal(await page.evaluate(() => document.activeElement.id), "code", "Tab left the editor");
  await run(page, "Control+Enter");
  assert.equal(await text(page, "#stdout"), "0\n1\n");
  await page.focus("#code");
  await page.keyboard.press("Escape");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "example");
  await page.keyboard.press("ArrowDown");
  assert.match(await page.inputValue("#code"), /^for i in range/, "choosing an example replaced the code");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "load");
  await page.selectOption("#example", "image");
  await page.keyboard.press("Enter");
  assert.match(await page.inputValue("#code"), /circles\.png/);
  assert.equal(await page.inputValue("#return"), "circles.png");
  await page.fill("#return", "");
  await page.focus("#example");
  // Focus is visible: the focused control gets an outline.
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.equal(outline, "solid");
});

test("an attached file comes back upper-cased as a download", async () => {
  const input = path.join(TMP, "in.txt");
  fs.writeFileSync(input, "hello from the browser\n");
  await setCode(page, 'open("out.txt", "w").write(open("in.txt").read().upper())\nprint("done")');
  await page.setInputFiles("#files", input);
  await page.fill("#return", "out.txt");
  await run(page);
  assert.equal(await text(page, "#stdout"), "done\n");
  const link = page.locator('#file-list a[download="out.txt"]');
  await link.waitFor();
  const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
  assert.equal(download.suggestedFilename(), "out.txt");
  const saved = path.join(TMP, "downloaded.txt");
  await download.saveAs(saved);
  assert.equal(fs.readFileSync(saved, "utf8"), "HELLO FROM THE BROWSER\n");
  await page.setInputFiles("#files", []);
  await page.fill("#return", "");
});

test("a forbidden import shows its error", async () => {
  await setCode(page, "import os\nprint(os.getcwd())");
  await run(page);
  const msg = await text(page, "#message");
  assert.match(msg, /ForbiddenImportError/);
  assert.match(msg, /imports os\b/);
  assert.match(await text(page, "#r-status"), /\(rejected\)/);
  assert.equal(await page.locator("#message").getAttribute("class"), "message bad");
});

test("a generated PNG shows inline", async () => {
  await setCode(page, [
    "from PIL import Image",
    'Image.new("RGB", (48, 24), (200, 30, 30)).save("red.png")',
    'print("saved")',
  ].join("\n"));
  await page.fill("#return", "red.png, missing.png");
  await run(page);
  assert.equal(await text(page, "#stdout"), "saved\n");
  const img = page.locator('#images img[alt="Returned image red.png"]');
  await img.waitFor();
  await page.waitForFunction(() => {
    const i = document.querySelector("#images img");
    return i && i.complete && i.naturalWidth > 0;
  });
  assert.deepEqual(await img.evaluate((i) => [i.naturalWidth, i.naturalHeight]), [48, 24]);
  assert.match(await img.getAttribute("src"), /^blob:/);
  assert.match(await text(page, "#file-list"), /missing\.png — not found/);
  assert.deepEqual(consoleErrors, [], "console errors during successful runs");
  await page.locator("#playground").screenshot({ path: path.join(OUT, "browser-playground.png") });
  await page.fill("#return", "");
});

test("a returned SVG shows through <img> only; its download is not an SVG document", async () => {
  await setCode(page, [
    "svg = '<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"30\" height=\"20\">' \\",
    "    '<script>parent.pwned = 1</script><rect width=\"30\" height=\"20\" fill=\"blue\"/></svg>'",
    'open("x.svg", "w").write(svg)',
  ].join("\n"));
  await page.fill("#return", "x.svg");
  // The CSP keeps fetch() off blob: URLs, so note each object URL's type as it is made.
  await page.evaluate(() => {
    window.blobTypes = {};
    const make = URL.createObjectURL;
    URL.createObjectURL = (b) => {
      const u = make(b);
      window.blobTypes[u] = b.type;
      return u;
    };
  });
  await run(page);
  const img = page.locator('#images img[alt="Returned image x.svg"]');
  await img.waitFor();
  await page.waitForFunction(() => {
    const i = document.querySelector("#images img");
    return i && i.complete && i.naturalWidth > 0;
  });
  const types = await page.evaluate(() => [
    window.blobTypes[document.querySelector('#file-list a[download="x.svg"]').href],
    window.blobTypes[document.querySelector("#images img").src]]);
  assert.deepEqual(types, ["application/octet-stream", "image/svg+xml"]);
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  await page.fill("#return", "");
});

test("/docs renders every operation of /openapi.json, and try it works", async () => {
  const p = await context.newPage();
  const errors = [];
  watchConsole(p, errors);
  const doc = await (await fetch(base + "/openapi.json")).json();
  await p.goto(base + "/docs");
  await p.waitForSelector("details.op");
  let count = 0;
  for (const [pth, item] of Object.entries(doc.paths)) {
    for (const method of Object.keys(item)) {
      count++;
      const summary = p.locator("details.op > summary", { hasText: pth }).filter({ hasText: method.toUpperCase() });
      assert.ok(await summary.count() >= 1, `no operation ${method.toUpperCase()} ${pth} on /docs`);
    }
  }
  assert.equal(await text(p, "#api-status"), `${count} operations.`);
  // $refs are resolved: the result schema of /v1/execute lists its fields.
  const v1 = p.locator("details#op-post-v1-execute");
  await v1.locator("summary").click();
  assert.match(await v1.textContent(), /exit_code/);
  assert.match(await v1.textContent(), /return_files/);
  // Try it: GET /v1/info from the page.
  const info = p.locator("details#op-get-v1-info");
  await info.locator("summary").click();
  await info.locator("button", { hasText: "Send GET /v1/info" }).click();
  await info.locator(".try-out pre").waitFor();
  assert.match(await info.locator(".try-out").textContent(), /HTTP 200/);
  assert.match(await info.locator(".try-out pre").textContent(), /"requests_per_minute": 9/);
  assert.deepEqual(errors, [], "console errors on /docs");
  assert.deepEqual(await lowContrast(p), [], "text under 4.5:1 contrast on /docs");
  await p.screenshot({ path: path.join(OUT, "browser-docs.png") });
  await p.close();
});

test("phone-sized and dark: no horizontal scrolling, dark colours, the playground works", async () => {
  const phone = await browser.newContext({ viewport: { width: 375, height: 740 }, colorScheme: "dark", deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const p = await phone.newPage();
  const errors = [];
  watchConsole(p, errors);
  await p.goto(base + "/");
  await p.waitForSelector("#modules li:has-text('numpy')");
  const width = await p.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 375, `the page is ${width}px wide on a 375px screen`);
  const bg = await p.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const [r, g, b] = bg.match(/\d+/g).map(Number);
  assert.ok(r + g + b < 120, `dark mode background is ${bg}`);
  assert.deepEqual(await lowContrast(p), [], "text under 4.5:1 contrast (dark)");
  await p.fill("#code", "print('phone')");
  await run(p);
  assert.equal(await text(p, "#stdout"), "phone\n");
  assert.deepEqual(errors, []);
  await p.screenshot({ path: path.join(OUT, "browser-phone-dark.png"), fullPage: false });
  await phone.close();
});

test("a bad API key is explained; the rate limit says when to retry; the admin key is not limited", async () => {
  await page.fill("#apikey", "not-a-key");
  await setCode(page, "print(2)");
  let r = await run(page);
  assert.equal(r.status(), 401);
  assert.match(await text(page, "#message"), /API key was not accepted/);
  await page.fill("#apikey", "");
  let tries = 0;
  do {
    r = await run(page);
    tries++;
  } while (r.status() === 200 && tries <= RPM + 1);
  assert.equal(r.status(), 429, `no 429 after ${tries} runs`);
  const msg = await text(page, "#message");
  assert.match(msg, /Rate limit reached/);
  assert.match(msg, /run again in \d+ seconds? \(at \d/);
  await page.fill("#apikey", ADMIN_KEY);
  r = await run(page);
  assert.equal(r.status(), 200);
  assert.equal(await text(page, "#stdout"), "2\n");
  // The only console errors are the browser's own notes on the refused requests.
  for (const e of consoleErrors) assert.match(e, /Failed to load resource: the server responded with a status of (401|429)/);
});

test("every refusal the server can answer, and a network failure, gets a clear message", async () => {
  // Statuses that cannot be provoked on demand here (a full server, a failing one) are answered
  // by the browser in the server's own error shape, so the page's wording is what is tested.
  const cases = [
    [400, "ValidationError", "`timeout` must be a number of seconds", {}, /request was refused \(ValidationError\): `timeout` must be/],
    [400, "InvalidRequest", "malformed JSON", {}, /request was malformed: malformed JSON/],
    [403, "NetworkNotAllowed", "network access is not allowed for this caller", {}, /Not allowed \(NetworkNotAllowed\)/],
    [413, "PayloadTooLarge", "the request body is over 33554432 bytes", {}, /over a limit \(PayloadTooLarge\).*Shorten the code, or attach smaller or fewer files — this server takes \d+ characters of code, \d+ files of/s],
    [413, "PayloadTooLarge", "the code is 5000 characters; the limit is 2000", {}, /over a limit \(PayloadTooLarge\): the code is 5000 characters/],
    [415, "UnsupportedMediaType", "send multipart", {}, /did not accept the request's format/],
    [429, "RateLimitExceeded", "daily quota of 30 requests reached; it resets at 00:00 UTC", { "Retry-After": "7200" }, /daily quota.*run again in 2 hours \(at /s],
    [500, "InternalServerError", "the execution engine failed", {}, /pybox failed on the server \(InternalServerError\) \(request id test-1\)/],
    [501, "NetworkUnavailable", "this server runs every execution without network", {}, /Not available \(NetworkUnavailable\)/],
    [503, "ServerBusy", "every execution slot is busy; retry in a moment", { "Retry-After": "1" }, /server is busy.*run again in 1 second \(at /s],
  ];
  const p = await context.newPage();
  await p.goto(base + "/");
  await p.fill("#code", "print(3)");
  for (const [status, type, message, headers, expected] of cases) {
    await p.route(base + "/v1/execute", (route) => route.fulfill({
      status, headers: { "Content-Type": "application/json", ...headers },
      body: JSON.stringify({ status: "error", timestamp_utc: "2026-01-01T00:00:00.000Z",
        error_details: { type, message }, error: { type, message }, request_id: "test-1" }),
    }));
    await run(p);
    assert.match(await text(p, "#message"), expected, `HTTP ${status} ${type}`);
    assert.equal(await p.locator("#summary").isHidden(), true);
    await p.unroute(base + "/v1/execute");
  }
  await p.route(base + "/v1/execute", (route) => route.abort("connectionrefused"));
  await p.click("#run");
  await p.waitForFunction(() => /Could not reach the server/.test(document.getElementById("message").textContent));
  assert.match(await text(p, "#message"), new RegExp("Could not reach the server at " + base));
  await p.unroute(base + "/v1/execute");
  await p.close();
});

test("the server stops cleanly on SIGTERM", async () => {
  const [code, signal] = await stopServer(server);
  assert.equal(signal, null);
  assert.equal(code, 0, `pybox serve exit ${code}:\n${serverLog().slice(-3000)}`);
  fs.rmSync(path.join(TMP, "data"), { recursive: true, force: true });
});
