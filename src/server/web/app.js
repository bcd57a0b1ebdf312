/*
 * The docs page: limits read from /v1/info, and the playground's single run, which runs code via
 * /v1/execute with its output streamed (its session mode is notebook.js).
 */
"use strict";

(function () {
  const { el, bytes, seconds } = window.pbx;
  const play = window.pbxPlay;
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
    chart: {
      code: "import matplotlib.pyplot as plt\n\n" +
        "plt.plot([1, 4, 9, 16, 25], marker=\"o\")\n" +
        'plt.title("Squares")\n' +
        "plt.show()                  # each figure shown comes back as an image\n",
    },
    table: {
      code: "import pandas as pd\n\n" +
        'df = pd.DataFrame({"city": ["Oslo", "Lima", "Pune"], "temp_c": [4.5, 19.0, 27.5]})\n' +
        "display(df)                 # an HTML table, shown in a sandboxed frame\n",
    },
    stream: {
      code: "import time\n\n" +
        "for i in range(5):\n" +
        '    print("tick", i, flush=True)   # flush: the line is sent at once\n' +
        "    time.sleep(0.4)\n",
    },
    error: { code: "def ratio(a, b):\n    return a / b\n\nprint(ratio(1, 0))\n" },
    forbidden: { code: "import os\nprint(os.listdir('/'))\n" },
  };

  /* ---- limits from the running server ---- */

  function fillInfo() {
    play.setInfo(info);
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
    $("outputs-wrap").hidden = true;
    $("stdout").replaceChildren();
    $("stderr").replaceChildren();
    $("outputs").replaceChildren();
    $("file-list").replaceChildren();
    $("images").replaceChildren();
  }

  /*
   * Show a stream's final text. Text streamed in already and equal to it is left as it is,
   * so that a screen reader does not hear it twice.
   */
  function showStream(id, text, truncated) {
    const pre = $(id);
    if (text && !truncated && pre.childElementCount === 0 && pre.textContent === text) return;
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

  /* The rich outputs, in their order, replacing those shown while it ran. */
  function showOutputs(outputs) {
    const list = Array.isArray(outputs) ? outputs : [];
    $("outputs").replaceChildren(...list.map((o, i) => play.renderOutput(o, "Output " + (i + 1))));
    $("outputs-wrap").hidden = list.length === 0;
  }

  function showResult(res, rtt) {
    const [kind, text] = play.explainResult(res);
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
    showOutputs(res.outputs);
    if (res.result !== null && res.result !== undefined) {
      $("result").textContent = JSON.stringify(res.result, null, 2);
      $("result-value").hidden = false;
    }
    showFiles(res.files);
  }

  /* An event of the running execution's stream: its output as it arrives. */
  function onEvent(name, data) {
    if (name === "start") {
      $("streams").hidden = false;
    } else if ((name === "stdout" || name === "stderr") && typeof data.text === "string") {
      $("streams").hidden = false;
      $(name).append(data.text);
    } else if (name === "display" || name === "result") {
      const box = $("outputs");
      box.append(play.renderOutput(data, "Output " + (box.childElementCount + 1)));
      $("outputs-wrap").hidden = false;
    }
  }

  let aborter = null;       /* the running execution's AbortController */

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
    $("stop").hidden = false;
    resetOutput();
    setMessage("", "Running…");

    const form = new FormData();
    form.append("code", code);
    if ($("stdin").value !== "") form.append("stdin", $("stdin").value);
    for (const f of $("files").files) form.append("files", f, f.name);
    for (const n of returnNames()) form.append("return_files", n);

    aborter = new AbortController();
    const t0 = performance.now();
    /* Streamed: stdout, stderr and outputs show as they come, then the result replaces them. */
    const out = await play.streamPost("/v1/execute", { body: form, headers: play.authHeaders(), signal: aborter.signal, onEvent });
    const rtt = performance.now() - t0;
    switch (out.kind) {
    case "result":
      showResult(out.result, rtt);
      break;
    case "refused":
      resetOutput();
      setMessage(out.status === 429 || out.status === 503 ? "warn" : "bad", play.explainRefusal(out.status, out.body, out.retryAfter));
      break;
    case "network":
      setMessage("bad", ["Could not reach the server at " + window.location.origin + ": the network failed or the server is down.",
        "Check your connection and try again."]);
      break;
    case "aborted":
      setMessage("warn", "Stopped: the connection was closed, so the server stopped the execution. What it printed until then is shown.");
      break;
    default:
      setMessage("bad", out.status === 200
        ? "The connection ended before the result arrived. What the code printed until then is shown."
        : "The server answered HTTP " + out.status + " with a body that is not JSON.");
      break;
    }
    finish();
  }

  function finish() {
    running = false;
    aborter = null;
    $("run").disabled = false;
    $("busy").hidden = true;
    $("stop").hidden = true;
  }

  /* Show the playground of the mode chosen: a single run, or a session's cells. */
  function showMode() {
    const session = $("mode-session").checked;
    $("single-mode").hidden = session;
    $("session-mode").hidden = !session;
  }

  document.addEventListener("DOMContentLoaded", () => {
    window.pbx.fillOrigin();
    const code = $("code");
    play.editor(code, { run });
    code.addEventListener("input", updateCount);
    $("apikey").addEventListener("change", loadInfo);
    $("load").addEventListener("click", loadExample);
    $("run-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      run();
    });
    $("stop").addEventListener("click", () => {
      if (aborter) aborter.abort();
    });
    $("mode-single").addEventListener("change", showMode);
    $("mode-session").addEventListener("change", showMode);
    showMode();
    updateCount();
    loadInfo();
  });
})();
