/*
 * What both modes of the playground share (app.js: a single run; notebook.js: a session's
 * cells): requests answered as Server-Sent Events read through fetch(), the rich outputs of a
 * result, the wording of a refused request, and the code editor's keys.
 *
 * Everything the server sends is untrusted: it reaches the page only as text (textContent),
 * as an <img> of a data: URL, or inside an <iframe sandbox=""> (no scripts, an opaque origin),
 * never as markup of this page.
 */
"use strict";

window.pbxPlay = (function () {
  const { el, bytes, seconds } = window.pbx;

  let info = null;          /* GET /v1/info, once app.js has it */

  function setInfo(i) {
    info = i;
  }

  /* ---- Server-Sent Events over fetch() (EventSource cannot POST) ---- */

  /*
   * Read the events of `resp`, calling onEvent(name, data) for each (data parsed from JSON;
   * comments such as the keepalive are skipped). Resolves with the `end` event's data, or null
   * when the stream ended without one. Rejects as the read does (an abort among them).
   */
  async function readEvents(resp, onEvent) {
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let name = "";
    let data = [];
    let end = null;

    const dispatch = () => {
      if (data.length === 0) {
        name = "";
        return;
      }
      let value = null;
      try {
        value = JSON.parse(data.join("\n"));
      } catch (e) {
        value = null;
      }
      const ev = name || "message";
      name = "";
      data = [];
      if (value === null || typeof value !== "object") return;
      if (ev === "end") end = value;
      onEvent(ev, value);
    };

    const line = (l) => {
      if (l === "") {
        dispatch();
        return;
      }
      if (l[0] === ":") return;                 /* a comment: the keepalive */
      const colon = l.indexOf(":");
      const field = colon < 0 ? l : l.slice(0, colon);
      let value = colon < 0 ? "" : l.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    };

    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        line(buf.slice(0, i).replace(/\r$/, ""));
        buf = buf.slice(i + 1);
      }
    }
    buf += decoder.decode();
    if (buf !== "") line(buf.replace(/\r$/, ""));
    dispatch();
    return end;
  }

  /*
   * POST `body` to `url` asking for Server-Sent Events, calling onEvent(name, data) as they
   * arrive. Resolves (never rejects) with what happened:
   *   {kind: "result", result}            the result object (the `end` event, or a plain JSON 200)
   *   {kind: "refused", status, body, retryAfter}  an error answer (before the stream, or as `end`)
   *   {kind: "network"}                   the server could not be reached
   *   {kind: "aborted"}                   `signal` aborted it
   *   {kind: "broken", status}            an answer that is neither (a stream cut short, not JSON)
   */
  async function streamPost(url, { body, headers, signal, onEvent }) {
    let resp;
    try {
      resp = await fetch(url, { method: "POST", body, headers: { ...headers, Accept: "text/event-stream" }, signal });
    } catch (e) {
      return { kind: e && e.name === "AbortError" ? "aborted" : "network" };
    }
    const type = resp.headers.get("Content-Type") || "";
    if (resp.status === 200 && /^text\/event-stream/i.test(type)) {
      let end;
      try {
        end = await readEvents(resp, onEvent || (() => {}));
      } catch (e) {
        return { kind: e && e.name === "AbortError" ? "aborted" : "broken", status: 200 };
      }
      if (end === null) return { kind: "broken", status: 200 };
      if (isRefusal(end)) return { kind: "refused", status: statusOf(end), body: end, retryAfter: NaN };
      return { kind: "result", result: end };
    }
    let parsed = null;
    try {
      parsed = await resp.json();
    } catch (e) {
      if (e && e.name === "AbortError") return { kind: "aborted" };
      parsed = null;
    }
    if (parsed === null || typeof parsed !== "object") return { kind: "broken", status: resp.status };
    if (resp.status === 200 && typeof parsed.status === "string" && !isRefusal(parsed)) {
      return { kind: "result", result: parsed };
    }
    return { kind: "refused", status: resp.status, body: parsed, retryAfter: parseInt(resp.headers.get("Retry-After") || "", 10) };
  }

  /* An error answer rather than a result object: it has error_details. */
  function isRefusal(body) {
    return body !== null && typeof body === "object" && typeof body.error_details === "object" && body.error_details !== null;
  }

  /* The HTTP status of an error type, for a refusal that came as a stream's `end`. */
  const TYPE_STATUS = {
    InvalidRequest: 400, ValidationError: 400, Unauthorized: 401, NetworkNotAllowed: 403,
    NotFound: 404, MethodNotAllowed: 405, SessionBusy: 409, SessionDead: 410, PayloadTooLarge: 413,
    UnsupportedMediaType: 415, RateLimitExceeded: 429, SessionLimitExceeded: 429,
    InternalServerError: 500, NetworkUnavailable: 501, ServerBusy: 503,
  };

  function statusOf(body) {
    return TYPE_STATUS[(body.error_details || {}).type] || 500;
  }

  /* ---- rich outputs ---- */

  const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

  function dimension(meta, mime, what) {
    const m = meta && typeof meta[mime] === "object" && meta[mime] ? meta[mime][what] : undefined;
    return Number.isInteger(m) && m > 0 && m < 100000 ? m : null;
  }

  /*
   * The height to give an HTML output: its frame's document is another origin, so it cannot
   * be measured. A table gets a row's height per row, up to a cap past which the frame scrolls.
   */
  function frameHeight(html) {
    const rows = (html.match(/<tr[\s>]/gi) || []).length;
    const h = rows > 0 ? 24 + rows * 29 : 140;
    return Math.max(60, Math.min(h, 420));
  }

  /*
   * One output {type, data, metadata} as a node: its richest form this page can show safely.
   * PNG and SVG as an <img> of a data: URL (an image runs no script), HTML in a sandboxed
   * frame, JSON and text as text. `label` names it for assistive technology.
   */
  function renderOutput(output, label) {
    const o = output && typeof output === "object" ? output : {};
    const data = o.data && typeof o.data === "object" ? o.data : {};
    const meta = o.metadata && typeof o.metadata === "object" ? o.metadata : {};
    const plain = typeof data["text/plain"] === "string" ? data["text/plain"] : "";
    const kind = o.type === "result" ? "result" : "display";
    const box = el("div", { class: "output output-" + kind });
    const png = typeof data["image/png"] === "string" ? data["image/png"].replace(/\s+/g, "") : null;

    if (meta.omitted) {
      box.append(el("p", { class: "empty" }, plain || "[output omitted]"));
    } else if (png !== null && BASE64.test(png)) {
      box.append(el("img", {
        src: "data:image/png;base64," + png,
        alt: plain ? "Image: " + plain : label || "Image output",
        width: dimension(meta, "image/png", "width"),
        height: dimension(meta, "image/png", "height"),
      }));
    } else if (typeof data["image/svg+xml"] === "string") {
      box.append(el("img", {
        src: "data:image/svg+xml;charset=utf-8," + encodeURIComponent(data["image/svg+xml"]),
        alt: plain ? "SVG image: " + plain : label || "SVG image output",
      }));
    } else if (typeof data["text/html"] === "string") {
      /* sandbox="" first, before the document is given: no scripts, forms or popups, an
         opaque origin; the page's CSP (inherited by srcdoc) blocks its inline styles too. */
      const frame = el("iframe", { sandbox: "", class: "html-output", title: label || "HTML output", referrerpolicy: "no-referrer" });
      frame.style.height = frameHeight(data["text/html"]) + "px";
      frame.srcdoc = data["text/html"];
      box.append(frame);
    } else if (Object.prototype.hasOwnProperty.call(data, "application/json")) {
      box.append(el("pre", { class: "stream json" }, JSON.stringify(data["application/json"], null, 2)));
    } else {
      box.append(el("pre", { class: "stream" }, plain));
    }
    return box;
  }

  /* ---- results and refusals in words ---- */

  function explainResult(res) {
    const e = res.error || {};
    switch (res.status) {
    case "ok":
      return ["ok", "The code ran and exited with status 0."];
    case "error":
      if (e.type === "KeyboardInterrupt") return ["warn", "Interrupted (KeyboardInterrupt)."];
      if (e.type) return ["bad", "The code raised " + e.type + (e.message ? ": " + e.message : "") + ". The traceback is in stderr."];
      return ["bad", "The code exited with status " + res.exit_code + "."];
    case "timeout":
      return ["bad", "The code was stopped: it ran past the time limit" + (info ? " of " + seconds(info.limits.timeout_s) : "") + "."];
    case "memory_limit":
      return ["bad", "The code was stopped: it used more than the memory limit" + (info ? " of " + info.limits.memory_mb + " MiB" : "") + "."];
    case "killed":
      if (e.type === "Cancelled") return ["warn", "Stopped: the execution was cancelled."];
      return ["bad", "The code was killed by " + (res.signal || "a signal") + "."];
    case "rejected":
      if (e.type === "ForbiddenImportError") {
        const mods = (e.disallowed || []).join(", ");
        return ["bad", "ForbiddenImportError: the code was not run because it imports " + (mods || "a module") +
          ", which this server does not allow. The modules you may import are listed under Limits."];
      }
      if (e.type === "SyntaxError") {
        return ["bad", "SyntaxError" + (e.line ? " on line " + e.line : "") + ": " + (e.message || "the code does not parse") + ". It was not run."];
      }
      return ["bad", (e.type || "Rejected") + ": " + (e.message || "the code was refused before it ran") + "."];
    default:
      return ["warn", "The server reported status " + res.status + "."];
    }
  }

  function retryText(seconds_) {
    if (!(seconds_ > 0)) return "Try again later.";
    const at = new Date(Date.now() + seconds_ * 1000);
    const when = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    const span = seconds_ >= 3600 ? Math.round(seconds_ / 360) / 10 + " hours"
      : seconds_ >= 120 ? Math.round(seconds_ / 60) + " minutes"
        : seconds_ + (seconds_ === 1 ? " second" : " seconds");
    return "You can run again in " + span + " (at " + when + ").";
  }

  /* Why a session ended, in words, from its dead_reason. */
  const REASONS = {
    timeout: "a call ran past its time limit and did not stop when interrupted",
    memory_limit: "a call used more than the memory limit",
    cpu_limit: "a call used more than the CPU time limit",
    pids_limit: "a call started more processes or threads than allowed",
    crashed: "its interpreter crashed",
    lost: "the server lost it",
    idle_timeout: "it was idle too long",
    max_lifetime: "it reached its maximum lifetime",
    deleted: "it was ended",
    closed: "it was ended",
    shutdown: "the server shut down",
    gone: "the server no longer has it (it restarted, or the session is another API key's)",
  };

  function reasonText(reason) {
    return REASONS[reason] || "it ended";
  }

  /* A human message for a request the server refused: a list of sentences. */
  function explainRefusal(status, body, retryAfter) {
    const d = (body && (body.error_details || body.error)) || {};
    const msg = d.message || "";
    const rid = body && body.request_id ? " (request id " + body.request_id + ")" : "";
    switch (status) {
    case 400:
      if (d.type === "InvalidRequest") return ["The request was malformed: " + msg + "."];
      if (d.type === "ValidationError") return ["The request was refused (ValidationError): " + msg + ". Check the code length, the files and the names to return."];
      return [(d.type || "Bad request") + ": " + msg];
    case 401:
      return ["The API key was not accepted (Unauthorized): " + msg + ".",
        "Check the key, or clear the API key field to run with the anonymous limits."];
    case 403:
      return ["Not allowed (" + (d.type || "Forbidden") + "): " + msg + "."];
    case 404:
      if (d.type === "NotFound" && /session/.test(msg)) return ["The session is gone (NotFound): " + msg + "."];
      return ["This server does not offer the playground's endpoint (" + (d.type || status) + "): " + msg + "."];
    case 405:
      return ["This server does not offer the playground's endpoint (" + (d.type || status) + "): " + msg + "."];
    case 409:
      return ["The session is busy (SessionBusy): " + msg + ".", "Wait for the running call to finish, or interrupt it."];
    case 410:
      return ["The session has ended (SessionDead): " + reasonText(d.reason) + (d.reason ? " (" + d.reason + ")" : "") + ".",
        "Start a new session to run cells again; the old one's variables are gone."];
    case 413:
      return ["The request is over a limit (PayloadTooLarge): " + msg + ".",
        "Shorten the code, or attach smaller or fewer files" + (info ? " — this server takes " + info.limits.code_chars + " characters of code, " + info.limits.input_files + " files of " + bytes(info.limits.input_file_bytes) + " each and " + bytes(info.limits.body_bytes) + " per request." : ".")];
    case 415:
      return ["The server did not accept the request's format (UnsupportedMediaType): " + msg + "."];
    case 429:
      if (d.type === "SessionLimitExceeded") return ["Too many sessions (SessionLimitExceeded): " + msg + ".", retryText(retryAfter)];
      return ["Rate limit reached (RateLimitExceeded): " + msg + ".", retryText(retryAfter)];
    case 500:
      return ["pybox failed on the server (InternalServerError)" + rid + ". Try again; if it keeps happening, tell the server's operator."];
    case 501:
      return ["Not available (" + (d.type || "NotImplemented") + "): " + msg + "."];
    case 503:
      return ["The server is busy (ServerBusy): every execution slot is taken.", retryText(retryAfter || 1)];
    default:
      return ["The server answered HTTP " + status + (d.type ? " (" + d.type + ")" : "") + (msg ? ": " + msg : "") + "."];
    }
  }

  /* ---- the code editor's keys ---- */

  /* Insert text at the caret, keeping the browser's undo history where it can. */
  function insert(ta, text) {
    if (!document.execCommand("insertText", false, text)) {
      ta.setRangeText(text, ta.selectionStart, ta.selectionEnd, "end");
      ta.dispatchEvent(new Event("input"));
    }
  }

  function lineStart(value, pos) {
    return value.lastIndexOf("\n", pos - 1) + 1;
  }

  function dedent(ta) {
    const v = ta.value;
    const start = lineStart(v, ta.selectionStart);
    const end = ta.selectionEnd;
    const lines = v.slice(start, end).split("\n");
    let removedFirst = 0;
    let removed = 0;
    const out = lines.map((line, i) => {
      const m = /^ {1,4}/.exec(line);
      const k = m ? m[0].length : 0;
      if (i === 0) removedFirst = k;
      removed += k;
      return line.slice(k);
    });
    if (removed === 0) return;
    const caret = ta.selectionStart;
    ta.setSelectionRange(start, end);
    insert(ta, out.join("\n"));
    const s = Math.max(start, caret - removedFirst);
    ta.setSelectionRange(s, lines.length === 1 ? s : ta.selectionEnd);
  }

  /*
   * Make `ta` a code editor: Tab and Shift+Tab indent and dedent by four spaces, Enter keeps
   * the line's indentation (one level more after a colon), Esc then Tab leaves it, and
   * Ctrl+Enter (Cmd+Enter) calls keys.run(); Shift+Enter calls keys.runNext() when given.
   */
  function editor(ta, keys) {
    let escaped = false;    /* Esc was pressed: the next Tab leaves the editor */

    ta.addEventListener("blur", () => { escaped = false; });
    ta.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") {
        escaped = true;
        return;
      }
      if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") {
        ev.preventDefault();
        keys.run();
        return;
      }
      if (ev.shiftKey && ev.key === "Enter" && keys.runNext) {
        ev.preventDefault();
        keys.runNext();
        return;
      }
      if (ev.key === "Tab" && !ev.ctrlKey && !ev.altKey && !ev.metaKey) {
        if (escaped) {
          escaped = false;
          return;                /* let the browser move the focus */
        }
        ev.preventDefault();
        if (ev.shiftKey) {
          dedent(ta);
        } else if (ta.selectionStart !== ta.selectionEnd && ta.value.slice(ta.selectionStart, ta.selectionEnd).includes("\n")) {
          const v = ta.value;
          const start = lineStart(v, ta.selectionStart);
          const block = v.slice(start, ta.selectionEnd).split("\n").map((l) => "    " + l).join("\n");
          ta.setSelectionRange(start, ta.selectionEnd);
          insert(ta, block);
        } else {
          insert(ta, "    ");
        }
        return;
      }
      escaped = false;
      if (ev.key === "Enter" && !ev.shiftKey && !ev.altKey) {
        const v = ta.value;
        const start = lineStart(v, ta.selectionStart);
        const line = v.slice(start, ta.selectionStart);
        let indent = /^ */.exec(line)[0];
        if (/:\s*$/.test(line)) indent += "    ";
        if (indent) {
          ev.preventDefault();
          insert(ta, "\n" + indent);
        }
      }
    });
  }

  /* The headers of the playground's requests: the API key's, when one is entered. */
  function authHeaders() {
    const key = document.getElementById("apikey").value.trim();
    return key ? { Authorization: "Bearer " + key } : {};
  }

  return {
    setInfo, streamPost, readEvents, renderOutput, explainResult, explainRefusal, retryText,
    reasonText, editor, authHeaders,
  };
})();
