/* The docs page: limits read from /v1/info, and the playground that runs code via /v1/execute. */
"use strict";

(function () {
  const { el, bytes, seconds } = window.pbx;
  const $ = (id) => document.getElementById(id);

  let info = null;          /* GET /v1/info, once loaded */
  let running = false;
  let blobUrls = [];        /* object URLs of the last result's files, revoked on the next run */

  const EXAMPLES = {
    hello: { code: 'print("Hello from pybox")\nprint(sum(range(10)))\n' },
    stdin: {
      code: "import sys\n\nfor n, line in enumerate(sys.stdin, 1):\n    print(n, line.rstrip()[::-1])\n",
      stdin: "hello\nworld\n",
    },
    upper: {
      code: "# Attach a text file named in.txt, then run.\n" +
        'text = open("in.txt").read()\n' +
        'open("out.txt", "w").write(text.upper())\n' +
        'print(len(text), "characters upper-cased into out.txt")\n',
      ret: "out.txt",
    },
    image: {
      code: "from PIL import Image, ImageDraw\n\n" +
        'img = Image.new("RGB", (240, 120), "white")\n' +
        "draw = ImageDraw.Draw(img)\n" +
        "for i in range(6):\n" +
        '    draw.ellipse((10 + 36 * i, 20, 70 + 36 * i, 100), outline=(30 * i, 90, 200), width=4)\n' +
        'img.save("circles.png")\n' +
        'print("wrote circles.png")\n',
      ret: "circles.png",
    },
    numpy: {
      code: "import numpy as np\n\n" +
        "rng = np.random.default_rng(7)\n" +
        "x = rng.normal(10, 2, size=100_000)\n" +
        'print(f"mean {x.mean():.3f}  std {x.std():.3f}")\n' +
        "print(np.percentile(x, [5, 50, 95]).round(2))\n",
    },
    error: { code: "def ratio(a, b):\n    return a / b\n\nprint(ratio(1, 0))\n" },
    forbidden: { code: "import os\nprint(os.listdir('/'))\n" },
  };

  /* ---- limits from the running server ---- */

  function fillInfo() {
    const l = info.limits;
    const rl = info.rate_limits;
    const rows = [
      ["Wall time per execution", seconds(l.timeout_s)],
      ["CPU time per process", seconds(l.cpu_s)],
      ["Memory per execution", l.memory_mb + " MiB"],
      ["Code length", l.code_chars + " characters"],
      ["Standard input", bytes(l.stdin_bytes)],
      ["stdout / stderr kept", bytes(l.stdout_bytes) + " / " + bytes(l.stderr_bytes) + ", then truncated"],
      ["Attached files", l.input_files + " files, " + bytes(l.input_file_bytes) + " each"],
      ["Returned files", l.return_files + " files, " + bytes(l.return_file_bytes) + " each"],
      ["Everything returned", bytes(l.answer_bytes) + " in all: output, main() value, files"],
      ["Processes and threads", String(l.pids)],
      ["Disk (/work and /tmp)", bytes(l.disk_bytes) + ", " + l.disk_inodes + " files"],
      ["Request body", bytes(l.body_bytes)],
      ["Requests per minute", rl.requests_per_minute === null ? "unlimited" : String(rl.requests_per_minute)],
      ["Requests per day (UTC)", rl.requests_per_day === null ? "unlimited" : String(rl.requests_per_day)],
      ["Executions at once (server-wide)", String(info.max_concurrency)],
      ["Network", info.network ? "available" : "none"],
    ];
    const tbody = $("limits-table").tBodies[0];
    tbody.replaceChildren(...rows.map(([k, v]) => el("tr", null, el("th", { scope: "row" }, k), el("td", null, v))));
    $("modules").replaceChildren(...(info.all_modules
      ? [el("li", null, "Any module: no allowlist applies to this caller")]
      : info.allowed_modules.map((m) => el("li", null, m))));
    $("limits-whose").textContent = info.policy === "admin" ? "the admin key"
      : info.policy === "key" ? "the API key “" + info.key_name + "”" : "callers without an API key";
    $("version").textContent = info.version;
    document.querySelectorAll("[data-info]").forEach((n) => {
      const what = n.getAttribute("data-info");
      if (what === "code_chars") n.textContent = String(l.code_chars);
      else if (what === "files") n.textContent = ", at most " + l.input_files + " of " + bytes(l.input_file_bytes) + " each";
      else if (what === "body") n.textContent = " (" + bytes(l.body_bytes) + ")";
    });
    updateCount();
  }

  /*
   * The limits of the caller the playground runs as: the API key's when one is entered (the
   * same header as a run sends), else the anonymous ones.  A key the server refuses is said so,
   * and the anonymous limits shown.
   */
  async function loadInfo() {
    const key = $("apikey").value.trim();
    $("info-error").hidden = true;
    try {
      if (key) {
        const r = await fetch("/v1/info", { headers: { Accept: "application/json", Authorization: "Bearer " + key } });
        if (r.ok) {
          info = await r.json();
          fillInfo();
          return;
        }
        let msg = "HTTP " + r.status;
        try {
          const d = (await r.json()).error_details || {};
          if (d.message) msg = d.message;
        } catch (e) { /* not JSON */ }
        const p = $("info-error");
        p.textContent = "The API key was not accepted (" + msg + "); these are the limits without a key.";
        p.hidden = false;
      }
      info = await window.pbx.getJSON("/v1/info");
      fillInfo();
    } catch (e) {
      const p = $("info-error");
      p.textContent = "Could not read this server's limits (" + e.message + "). The playground still works.";
      p.hidden = false;
      $("limits-table").tBodies[0].replaceChildren(el("tr", null, el("td", { colspan: 2 }, "Not available")));
      $("modules").replaceChildren(el("li", null, "Not available"));
    }
  }

  /* ---- the editor ---- */

  function codeLength() {
    return Array.from($("code").value).length;
  }

  function updateCount() {
    const n = codeLength();
    const c = $("code-count");
    const max = info ? info.limits.code_chars : null;
    c.textContent = max ? n + " / " + max + " characters" : n + " characters";
    c.classList.toggle("over", max !== null && n > max);
  }

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

  let escaped = false;      /* Esc was pressed: the next Tab leaves the editor */

  function onEditorKey(ev) {
    const ta = ev.target;
    if (ev.key === "Escape") {
      escaped = true;
      return;
    }
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") {
      ev.preventDefault();
      run();
      return;
    }
    if (ev.key === "Tab" && !ev.ctrlKey && !ev.altKey && !ev.metaKey) {
      if (escaped) {
        escaped = false;
        return;                  /* let the browser move the focus */
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
      /* Keep the indentation of the line, one level more after a colon. */
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
  }

  function loadExample() {
    const ex = EXAMPLES[$("example").value];
    if (!ex) {
      setMessage("warn", "Choose an example in the list first.");
      return;
    }
    $("code").value = ex.code;
    $("stdin").value = ex.stdin || "";
    $("return").value = ex.ret || "";
    updateCount();
    setMessage("", "Example loaded into the editor. Press Run to execute it.");
  }

  /* ---- running ---- */

  function returnNames() {
    return $("return").value.split(/[\s,]+/).filter((s) => s.length > 0);
  }

  function setMessage(kind, parts) {
    const m = $("message");
    m.className = "message " + (kind || "");
    const nodes = (Array.isArray(parts) ? parts : [parts]).map((p) => (typeof p === "string" ? el("p", null, p) : p));
    /* A space between the paragraphs, so that their text reads as sentences ("reached. You
       can run again"), as screen readers and a copy take it, not glued together. */
    m.replaceChildren(...nodes.flatMap((n, i) => (i === 0 ? [n] : [" ", n])));
  }

  function resetOutput() {
    blobUrls.forEach((u) => URL.revokeObjectURL(u));
    blobUrls = [];
    $("summary").hidden = true;
    $("streams").hidden = true;
    $("returned").hidden = true;
    $("result-value").hidden = true;
    $("file-list").replaceChildren();
    $("images").replaceChildren();
  }

  function showStream(id, text, truncated) {
    const pre = $(id);
    pre.replaceChildren();
    if (!text) {
      pre.append(el("span", { class: "empty" }, "(empty)"));
    } else {
      pre.append(text);
    }
    if (truncated) pre.append(el("span", { class: "empty" }, "\n[truncated: the server keeps only the first part]"));
  }

  const MIME = {
    png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", svg: "image/svg+xml", gif: "image/gif",
    txt: "text/plain", csv: "text/csv", json: "application/json", pdf: "application/pdf", html: "text/plain",
  };
  const INLINE = new Set(["png", "jpg", "jpeg", "svg"]);
  /*
   * Types a browser may open from a download link as a document of this page's origin; an SVG
   * (or HTML) returned file opened that way could run its scripts.  Their downloads are
   * application/octet-stream; an SVG shows inline only through <img>, which runs no script.
   */
  const ACTIVE = new Set(["image/svg+xml", "text/html", "application/xhtml+xml", "text/xml", "application/xml"]);

  function decodeBase64(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function showFiles(files) {
    const names = Object.keys(files || {});
    if (names.length === 0) return;
    const list = $("file-list");
    const images = $("images");
    for (const name of names) {
      const f = files[name];
      if (!f || typeof f.content_base64 !== "string") {
        list.append(el("li", null, el("span", { class: "mono" }, name), " ", el("span", { class: "err" }, "— " + ((f && f.error) || "not returned"))));
        continue;
      }
      const ext = (name.split(".").pop() || "").toLowerCase();
      const type = MIME[ext] || "application/octet-stream";
      const data = decodeBase64(f.content_base64);
      const url = URL.createObjectURL(new Blob([data], { type: ACTIVE.has(type) ? "application/octet-stream" : type }));
      blobUrls.push(url);
      list.append(el("li", null,
        el("a", { href: url, download: name, class: "mono" }, "Download " + name),
        " ", el("span", { class: "size" }, "(" + bytes(f.size) + ")")));
      if (INLINE.has(ext)) {
        const src = ACTIVE.has(type) ? URL.createObjectURL(new Blob([data], { type })) : url;
        if (src !== url) blobUrls.push(src);
        images.append(el("figure", null, el("img", { src, alt: "Returned image " + name }), el("figcaption", null, name)));
      }
    }
    $("returned").hidden = false;
  }

  const STATUS_TEXT = {
    ok: "Finished",
    error: "Error",
    timeout: "Timed out",
    memory_limit: "Memory limit",
    killed: "Killed",
    rejected: "Rejected",
  };

  function explainResult(res) {
    const e = res.error || {};
    switch (res.status) {
    case "ok":
      return ["ok", "The code ran and exited with status 0."];
    case "error":
      if (e.type) return ["bad", "The code raised " + e.type + (e.message ? ": " + e.message : "") + ". The traceback is in stderr."];
      return ["bad", "The code exited with status " + res.exit_code + "."];
    case "timeout":
      return ["bad", "The code was stopped: it ran past the time limit" + (info ? " of " + seconds(info.limits.timeout_s) : "") + "."];
    case "memory_limit":
      return ["bad", "The code was stopped: it used more than the memory limit" + (info ? " of " + info.limits.memory_mb + " MiB" : "") + "."];
    case "killed":
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

  function showResult(res, rtt) {
    const [kind, text] = explainResult(res);
    setMessage(kind, text);
    $("r-status").textContent = (STATUS_TEXT[res.status] || res.status) + " (" + res.status + ")";
    $("r-exit").textContent = res.exit_code === null || res.exit_code === undefined ? "—" : String(res.exit_code);
    $("r-duration").textContent = (typeof res.duration_ms === "number" ? res.duration_ms.toFixed(1) + " ms" : "—") +
      " (" + Math.round(rtt) + " ms round trip)";
    $("r-cpu").textContent = typeof res.cpu_ms === "number" ? res.cpu_ms.toFixed(1) + " ms" : "—";
    $("summary").hidden = false;
    showStream("stdout", res.stdout, res.stdout_truncated);
    showStream("stderr", res.stderr, res.stderr_truncated);
    $("streams").hidden = false;
    if (res.result !== null && res.result !== undefined) {
      $("result").textContent = JSON.stringify(res.result, null, 2);
      $("result-value").hidden = false;
    }
    showFiles(res.files);
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

  /* A human message for a request the server refused. */
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
    case 405:
      return ["This server does not offer the playground's endpoint (" + (d.type || status) + "): " + msg + "."];
    case 413:
      return ["The request is over a limit (PayloadTooLarge): " + msg + ".",
        "Shorten the code, or attach smaller or fewer files" + (info ? " — this server takes " + info.limits.code_chars + " characters of code, " + info.limits.input_files + " files of " + bytes(info.limits.input_file_bytes) + " each and " + bytes(info.limits.body_bytes) + " per request." : ".")];
    case 415:
      return ["The server did not accept the request's format (UnsupportedMediaType): " + msg + "."];
    case 429:
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

  async function run() {
    if (running) return;
    const code = $("code").value;
    if (code.trim() === "") {
      setMessage("warn", "Write some Python code first.");
      $("code").focus();
      return;
    }
    running = true;
    $("run").disabled = true;
    $("busy").hidden = false;
    resetOutput();
    setMessage("", "Running…");

    const form = new FormData();
    form.append("code", code);
    if ($("stdin").value !== "") form.append("stdin", $("stdin").value);
    for (const f of $("files").files) form.append("files", f, f.name);
    for (const n of returnNames()) form.append("return_files", n);
    const headers = { Accept: "application/json" };
    const key = $("apikey").value.trim();
    if (key) headers.Authorization = "Bearer " + key;

    const t0 = performance.now();
    let resp;
    try {
      resp = await fetch("/v1/execute", { method: "POST", body: form, headers });
    } catch (e) {
      setMessage("bad", ["Could not reach the server at " + window.location.origin + ": the network failed or the server is down.",
        "Check your connection and try again."]);
      finish();
      return;
    }
    let body = null;
    try {
      body = await resp.json();
    } catch (e) {
      body = null;
    }
    const rtt = performance.now() - t0;
    if (resp.status === 200 && body && typeof body.status === "string") {
      showResult(body, rtt);
    } else if (body === null) {
      setMessage("bad", "The server answered HTTP " + resp.status + " with a body that is not JSON.");
    } else {
      const retry = parseInt(resp.headers.get("Retry-After") || "", 10);
      setMessage(resp.status === 429 || resp.status === 503 ? "warn" : "bad", explainRefusal(resp.status, body, retry));
    }
    finish();
  }

  function finish() {
    running = false;
    $("run").disabled = false;
    $("busy").hidden = true;
  }

  document.addEventListener("DOMContentLoaded", () => {
    window.pbx.fillOrigin();
    const code = $("code");
    code.addEventListener("keydown", onEditorKey);
    code.addEventListener("blur", () => { escaped = false; });
    code.addEventListener("input", updateCount);
    $("apikey").addEventListener("change", loadInfo);
    $("load").addEventListener("click", loadExample);
    $("run-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      run();
    });
    updateCount();
    loadInfo();
  });
})();
