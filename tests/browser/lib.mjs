// What the browser tests share: a real `pybox serve` started for the test file (../serve.mjs),
// headless Chromium (Debian's, driven by playwright-core), console watching and a contrast check.
//
// Env: PYBOX (the binary; default <repo>/build/pybox), PYBOX_CHROMIUM (default /usr/bin/chromium),
// PYBOX_BROWSER_OUT (where screenshots go; default a temporary directory).
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

/*
 * startServer(tmp, adminKey, args): `pybox serve` on 127.0.0.1:0 with `args`, its data in
 * TMP/data, the admin key `adminKey`; resolves with {child, base, log()} (and more) once it has
 * written its URL. stopServer(child): SIGTERM it and wait, resolves with [code, signal] (or a
 * note after 30 s).
 */
export { PYBOX, startServer, stopServer } from "../serve.mjs";
export const CHROMIUM = process.env.PYBOX_CHROMIUM || "/usr/bin/chromium";

/* A temporary directory of the test file's own, and where its screenshots go. */
export function tmpdirs() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pybox-browser-"));
  return { tmp, out: process.env.PYBOX_BROWSER_OUT || tmp };
}

export function launch() {
  assert.ok(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}: run scripts/install-deps`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
}

/*
 * Collect the page's console errors and uncaught exceptions into `sink`. Those of sandboxed
 * HTML outputs (documents about:srcdoc, whose scripts and inline styles are refused) go to
 * `frames` when given, else nowhere: refusing them is the point.
 */
export function watchConsole(p, sink, frames) {
  p.on("console", (msg) => {
    if (msg.type() !== "error") return;
    if ((msg.location().url || "").startsWith("about:srcdoc")) {
      if (frames) frames.push(msg.text());
      return;
    }
    sink.push(msg.text());
  });
  p.on("pageerror", (err) => sink.push("uncaught: " + err.message));
}

/*
 * Text whose contrast with its background is under WCAG's 4.5:1 (3:1 for large text): every
 * visible element with text of its own, against the first opaque background behind it.
 */
export function lowContrast(p) {
  return p.evaluate(() => {
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lin = (v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    };
    const lum = ([r, g, b]) => 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    const background = (node) => {
      for (let n = node; n; n = n.parentElement) {
        const c = rgb(getComputedStyle(n).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const bad = [];
    for (const e of document.body.querySelectorAll("*")) {
      const own = Array.from(e.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim());
      const isField = e.matches("input[type=text], input[type=password], textarea, select");
      if ((!own && !isField) || e.closest("[hidden]") || e.disabled || e.getClientRects().length === 0) continue;
      const st = getComputedStyle(e);
      if (st.visibility === "hidden" || st.display === "none") continue;
      const fg = lum(rgb(st.color).slice(0, 3));
      const bg = lum(background(e));
      const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
      const size = parseFloat(st.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(st.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5)) bad.push(`${e.tagName.toLowerCase()}.${e.className} "${(e.textContent || "").trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
    }
    return bad;
  });
}
