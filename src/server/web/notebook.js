/*
 * The playground's session mode: a notebook of cells that share one sandbox session
 * (/v1/sessions), run one after another, their output streamed as it arrives.
 *
 * The session is opened by the first cell run (POST /v1/sessions) and ended by the page
 * (DELETE) when asked or when the page goes away. A cell's run is POST .../execute with
 * Accept: text/event-stream; while it runs, Interrupt is POST .../interrupt. Cells run in the
 * order they were asked to, one at a time: a cell asked while another runs waits its turn.
 */
"use strict";

(function () {
  const { el } = window.pbx;
  const play = window.pbxPlay;
  const $ = (id) => document.getElementById(id);

  const queue = [];         /* cells waiting for their turn, in order */
  let current = null;       /* the cell whose call runs */
  let session = null;       /* {id, status, reason}: the session, once opened; reason once it ended */
  let opening = null;       /* POST /v1/sessions on its way (a promise of the session or null) */
  let serial = 0;           /* numbers the cells (their labels and element ids) */

  function sessionUrl(s, what) {
    return "/v1/sessions/" + encodeURIComponent(s.id) + (what ? "/" + what : "");
  }

  function jsonHeaders() {
    return { ...play.authHeaders(), Accept: "application/json" };
  }

  /* Paragraphs of text, with a space between them so that they read as sentences. */
  function paragraphs(parts) {
    const nodes = (Array.isArray(parts) ? parts : [parts]).map((p) => (typeof p === "string" ? el("p", null, p) : p));
    return nodes.flatMap((n, i) => (i === 0 ? [n] : [" ", n]));
  }

  function setSessionMessage(kind, parts) {
    const m = $("session-message");
    m.className = "message " + (kind || "");
    m.replaceChildren(...paragraphs(parts));
  }

  /* The session bar: what the session is, and which of its buttons apply. */
  function showSession() {
    const st = $("session-state");
    const dead = session !== null && session.reason !== null;
    if (session === null) {
      st.replaceChildren("No session yet: running a cell opens one.");
    } else {
      const what = dead ? "ended: " + play.reasonText(session.reason) + " (" + session.reason + ")"
        : current !== null ? "busy, running a cell" : session.status || "idle";
      st.replaceChildren("Session ", el("code", { class: "session-id" }, session.id), " — ",
        el("span", { class: "session-status" + (dead ? " err" : "") }, what));
    }
    $("session-interrupt").hidden = current === null || session === null || dead;
    $("session-restart").disabled = session === null || dead || current !== null;
    $("session-end").disabled = session === null;
    $("session-end").hidden = dead;
    $("session-new").hidden = !dead;
  }

  /* ---- the session's lifecycle ---- */

  async function requestJSON(url, method) {
    let resp;
    try {
      resp = await fetch(url, { method, headers: jsonHeaders() });
    } catch (e) {
      return { status: 0, body: null, retryAfter: NaN };
    }
    let body = null;
    if (resp.status !== 204) {
      try {
        body = await resp.json();
      } catch (e) {
        body = null;
      }
    }
    return { status: resp.status, body, retryAfter: parseInt(resp.headers.get("Retry-After") || "", 10) };
  }

  function unreachable() {
    return ["Could not reach the server at " + window.location.origin + ": the network failed or the server is down.",
      "Check your connection and try again."];
  }

  /* Say why a request about the session was refused; a 410 or 404 means it is gone. */
  function sessionRefused(s, r) {
    if (r.status === 0) {
      setSessionMessage("bad", unreachable());
      return;
    }
    if (r.body === null) {
      setSessionMessage("bad", "The server answered HTTP " + r.status + " with a body that is not JSON.");
      return;
    }
    setSessionMessage(r.status === 429 || r.status === 503 || r.status === 409 ? "warn" : "bad",
      play.explainRefusal(r.status, r.body, r.retryAfter));
    if (s !== null && s === session && r.status === 410) markDead(((r.body.error_details || {}).reason) || "ended", false);
    else if (s !== null && s === session && r.status === 404) markDead("gone", false);
  }

  /* Open a session (once, however many cells ask at the same time): the session, or null. */
  function openSession() {
    if (opening === null) {
      opening = (async () => {
        let resp;
        try {
          resp = await fetch("/v1/sessions", {
            method: "POST",
            headers: { ...jsonHeaders(), "Content-Type": "application/json" },
            body: "{}",
          });
        } catch (e) {
          setSessionMessage("bad", unreachable());
          return null;
        }
        let body = null;
        try {
          body = await resp.json();
        } catch (e) {
          body = null;
        }
        if (resp.status === 201 && body && typeof body.id === "string") {
          session = { id: body.id, status: typeof body.status === "string" ? body.status : "idle", reason: null };
          setSessionMessage("ok", "Opened a session: its cells share variables and imports until you restart or end it.");
          showSession();
          return session;
        }
        sessionRefused(null, { status: resp.status, body, retryAfter: parseInt(resp.headers.get("Retry-After") || "", 10) });
        return null;
      })().finally(() => {
        opening = null;
      });
    }
    return opening;
  }

  /* The session ended (`reason`, as the server names it): say so, and drop the cells waiting. */
  function markDead(reason, say) {
    if (session === null) return;
    session.reason = reason;
    failQueue("Not run: the session ended before its turn.");
    showSession();
    if (say) {
      setSessionMessage("bad", ["The session has ended: " + play.reasonText(reason) + " (" + reason + ").",
        "Its variables are gone. Start a new session to go on."]);
    }
  }

  async function interrupt() {
    const s = session;
    if (s === null || current === null) return;
    $("session-interrupt").disabled = true;
    failQueue("Not run: the cell before it was interrupted.");
    const r = await requestJSON(sessionUrl(s, "interrupt"), "POST");
    $("session-interrupt").disabled = false;
    if (r.status === 200 && r.body) {
      if (r.body.interrupted) setSessionMessage("", "Interrupt sent: the running cell gets a KeyboardInterrupt; the session keeps its state.");
      else setSessionMessage("warn", "Nothing was interrupted: no call of the session was running (it may have just finished or not yet started).");
    } else {
      sessionRefused(s, r);
    }
  }

  async function restart() {
    const s = session;
    if (s === null || s.reason !== null || current !== null) return;
    $("session-restart").disabled = true;
    const r = await requestJSON(sessionUrl(s, "restart"), "POST");
    if (r.status === 200 && r.body) {
      setSessionMessage("ok", "Restarted: a fresh interpreter with nothing defined; the files in /work are kept. Cell numbers start again at 1.");
      /* Its state as it is now, after the restart's own call. */
      const now = await requestJSON(sessionUrl(s, ""), "GET");
      if (s === session && now.status === 200 && now.body && typeof now.body.status === "string") s.status = now.body.status;
      else if (s === session) s.status = "idle";
    } else {
      sessionRefused(s, r);
    }
    showSession();
  }

  async function endSession() {
    const s = session;
    if (s === null) return;
    $("session-end").disabled = true;
    const r = await requestJSON(sessionUrl(s, ""), "DELETE");
    if (r.status === 204 || r.status === 404 || r.status === 410) {
      if (session === s) session = null;
      failQueue("Not run: the session was ended.");
      setSessionMessage("", "Session ended: its processes and files are gone. Running a cell opens a new one.");
    } else {
      sessionRefused(s, r);
    }
    showSession();
  }

  async function newSession() {
    session = null;
    showSession();
    await openSession();
  }

  /* ---- cells ---- */

  const cells = new Map();  /* a cell's <li> -> the cell */

  function setCount(cell, text) {
    cell.count.textContent = "[" + text + "]";
  }

  function setState(cell, state, text) {
    cell.li.dataset.state = state;
    cell.stateText.textContent = text || "";
    cell.remove.disabled = state === "queued" || state === "running";
  }

  function note(cell, kind, parts) {
    cell.out.append(el("div", { class: "cell-note message " + (kind || "") }, paragraphs(parts)));
  }

  function fit(ta) {
    ta.rows = Math.max(2, Math.min(30, ta.value.split("\n").length));
  }

  function addCell(code, before) {
    const n = ++serial;
    const id = "cell-" + n;
    const ta = el("textarea", {
      id: id + "-code", class: "cell-code", rows: 2, spellcheck: "false", autocapitalize: "off",
      autocomplete: "off", "aria-describedby": "cells-help",
    });
    ta.value = code || "";
    const cell = {
      n,
      ta,
      li: el("li", { class: "cell", id, "data-state": "idle" }),
      count: el("span", { class: "cell-count", id: id + "-count", title: "Execution count" }, "[ ]"),
      run: el("button", { type: "button", class: "cell-run", "aria-label": "Run cell " + n }, "Run"),
      remove: el("button", { type: "button", class: "cell-remove", "aria-label": "Remove cell " + n }, "Remove"),
      stateText: el("span", { class: "cell-state busy" }),
      out: el("div", { class: "cell-output", id: id + "-output", role: "log", "aria-live": "polite", "aria-label": "Output of cell " + n }),
      streamed: { stdout: "", stderr: "" },
    };
    cell.li.append(
      el("div", { class: "cell-in" },
        cell.count,
        el("div", { class: "cell-body" },
          el("label", { for: ta.id, class: "visually-hidden" }, "Code of cell " + n),
          ta,
          el("div", { class: "cell-actions" }, cell.run, cell.remove, cell.stateText))),
      cell.out);
    cells.set(cell.li, cell);
    play.editor(ta, { run: () => runCell(cell), runNext: () => runCell(cell, true) });
    ta.addEventListener("input", () => fit(ta));
    cell.run.addEventListener("click", () => runCell(cell));
    cell.remove.addEventListener("click", () => removeCell(cell));
    $("cells").insertBefore(cell.li, before ? before.li : null);
    fit(ta);
    return cell;
  }

  function removeCell(cell) {
    if (cell.li.dataset.state === "queued" || cell.li.dataset.state === "running") return;
    const next = cell.li.nextElementSibling || cell.li.previousElementSibling;
    cells.delete(cell.li);
    cell.li.remove();
    if (cells.size === 0) addCell("").ta.focus();
    else cells.get(next).ta.focus();
  }

  /* Ask `cell` to run (after the cells already waiting); `next`: then go to the next cell. */
  function runCell(cell, next) {
    if (next) {
      const after = cell.li.nextElementSibling;
      (after ? cells.get(after) : addCell("")).ta.focus();
    }
    const state = cell.li.dataset.state;
    if (state === "queued" || state === "running") return;
    if (cell.ta.value.trim() === "") {
      cell.out.replaceChildren();
      note(cell, "warn", "Write some Python code in the cell first.");
      return;
    }
    cell.out.replaceChildren();
    setCount(cell, "*");
    setState(cell, "queued", current !== null || queue.length > 0 ? "Waiting for the cells before it…" : "Starting…");
    queue.push(cell);
    pump();
  }

  /* Run the cells waiting, one at a time. */
  async function pump() {
    if (current !== null || queue.length === 0) return;
    const cell = queue.shift();
    current = cell;
    showSession();
    try {
      await execute(cell);
    } finally {
      current = null;
      showSession();
    }
    pump();
  }

  /* Every cell waiting is not run, saying `why`. */
  function failQueue(why) {
    while (queue.length > 0) {
      const cell = queue.shift();
      restoreCount(cell);
      setState(cell, "done");
      note(cell, "warn", why);
    }
  }

  function restoreCount(cell) {
    setCount(cell, Number.isInteger(cell.executed) ? String(cell.executed) : " ");
  }

  /* A stream's text, added after the cell's output so far (the same stream's block when last). */
  function appendStream(cell, name, text) {
    cell.streamed[name] += text;
    const last = cell.out.lastElementChild;
    if (last && last.dataset.stream === name) last.append(text);
    else cell.out.append(el("pre", { class: "stream cell-" + name, "data-stream": name }, text));
  }

  function onCellEvent(cell, name, data) {
    if (name === "start") {
      setState(cell, "running", "Running…");
    } else if ((name === "stdout" || name === "stderr") && typeof data.text === "string") {
      appendStream(cell, name, data.text);
    } else if (name === "display" || name === "result") {
      cell.out.append(play.renderOutput(data, "Output of cell " + cell.n));
    }
  }

  async function execute(cell) {
    cell.streamed = { stdout: "", stderr: "" };
    const s = session !== null ? session : await openSession();
    if (s === null) {
      restoreCount(cell);
      setState(cell, "done");
      note(cell, "bad", "Not run: no session could be opened (the reason is above).");
      failQueue("Not run: no session could be opened.");
      return;
    }
    if (s.reason !== null) {
      restoreCount(cell);
      setState(cell, "done");
      note(cell, "bad", ["Not run: the session has ended (" + s.reason + ").", "Start a new session to run cells again."]);
      return;
    }
    setState(cell, "queued", "Starting…");
    s.status = "busy";
    showSession();
    const out = await play.streamPost(sessionUrl(s, "execute"), {
      body: JSON.stringify({ code: cell.ta.value }),
      headers: { ...play.authHeaders(), "Content-Type": "application/json" },
      onEvent: (name, data) => onCellEvent(cell, name, data),
    });
    setState(cell, "done");
    if (s === session && s.reason === null) s.status = "idle";
    switch (out.kind) {
    case "result":
      finishCell(cell, s, out.result);
      break;
    case "refused": {
      restoreCount(cell);
      const kind = out.status === 409 || out.status === 429 || out.status === 503 ? "warn" : "bad";
      note(cell, kind, play.explainRefusal(out.status, out.body, out.retryAfter));
      if (s === session && out.status === 410) markDead(((out.body.error_details || {}).reason) || "ended", true);
      else if (s === session && out.status === 404) markDead("gone", true);
      break;
    }
    case "network":
      restoreCount(cell);
      note(cell, "bad", unreachable());
      break;
    default:
      restoreCount(cell);
      note(cell, "bad", "The connection ended before the result arrived. What the cell printed until then is shown.");
      break;
    }
  }

  /* The cell's result: its output as streamed (or, should it differ, as the result has it). */
  function finishCell(cell, s, res) {
    const outputs = Array.isArray(res.outputs) ? res.outputs : [];
    const shown = cell.out.querySelectorAll(".output").length;
    if ((res.stdout || "") !== cell.streamed.stdout || (res.stderr || "") !== cell.streamed.stderr || shown !== outputs.length) {
      cell.out.replaceChildren();
      cell.streamed = { stdout: "", stderr: "" };
      if (res.stdout) appendStream(cell, "stdout", res.stdout);
      if (res.stderr) appendStream(cell, "stderr", res.stderr);
      outputs.forEach((o) => cell.out.append(play.renderOutput(o, "Output of cell " + cell.n)));
    }
    if (res.stdout_truncated) note(cell, "warn", "stdout was truncated: the server keeps only the first part.");
    if (res.stderr_truncated) note(cell, "warn", "stderr was truncated: the server keeps only the first part.");
    if (Number.isInteger(res.execution_count)) {
      cell.executed = res.execution_count;
      setCount(cell, String(res.execution_count));
    } else {
      restoreCount(cell);
    }
    const e = res.error || {};
    if (res.status === "ok") {
      if (cell.out.childElementCount === 0) {
        cell.out.append(el("p", { class: "cell-done" }, "Done" + (typeof res.duration_ms === "number" ? " in " + res.duration_ms.toFixed(1) + " ms" : "") + ", no output."));
      }
    } else if (e.type === "KeyboardInterrupt") {
      note(cell, "warn", "Interrupted (KeyboardInterrupt)." + (res.state_preserved !== false ? " The session kept its state." : ""));
    } else if (res.status === "error" && e.type) {
      note(cell, "bad", e.type + (e.message ? ": " + e.message : ""));
    } else {
      note(cell, "bad", play.explainResult(res)[1]);
    }
    const ended = res.session && res.session.status === "dead";
    if (s === session && (ended || res.state_preserved === false)) {
      const reason = (res.session && res.session.dead_reason) || "ended";
      note(cell, "bad", ["The session has ended: " + play.reasonText(reason) + " (" + reason + ").",
        "Its variables are gone; start a new session to go on."]);
      markDead(reason, true);
    }
  }

  /* ---- the page ---- */

  document.addEventListener("DOMContentLoaded", () => {
    $("add-cell").addEventListener("click", () => addCell("").ta.focus());
    $("session-interrupt").addEventListener("click", interrupt);
    $("session-restart").addEventListener("click", restart);
    $("session-end").addEventListener("click", endSession);
    $("session-new").addEventListener("click", newSession);
    /* A page that goes away ends its session, so that it holds nothing until its idle timeout. */
    window.addEventListener("pagehide", () => {
      if (session !== null && session.reason === null) {
        fetch(sessionUrl(session, ""), { method: "DELETE", headers: play.authHeaders(), keepalive: true }).catch(() => {});
      }
    });
    addCell("");
    showSession();
  });
})();
