/* The API reference: renders this server's /openapi.json (OpenAPI 3.x), with a "try it" per operation. */
"use strict";

(function () {
  const { el } = window.pbx;
  const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
  let doc = null;

  /* ---- $ref ---- */

  function refName(ref) {
    return ref.split("/").pop().replace(/~1/g, "/").replace(/~0/g, "~");
  }

  function resolve(ref) {
    if (typeof ref !== "string" || !ref.startsWith("#/")) return null;
    let node = doc;
    for (const raw of ref.slice(2).split("/")) {
      const part = raw.replace(/~1/g, "/").replace(/~0/g, "~");
      if (node === null || typeof node !== "object" || !(part in node)) return null;
      node = node[part];
    }
    return node;
  }

  /* A parameter, response or request body may itself be a $ref. */
  function deref(obj) {
    let seen = 0;
    while (obj && obj.$ref && seen++ < 10) obj = resolve(obj.$ref) || {};
    return obj || {};
  }

  /* Description text, with `backticks` shown as code; never parsed as HTML. */
  function prose(text) {
    return String(text).split("`").map((part, i) => (i % 2 ? el("code", null, part) : part));
  }

  function anchor(name) {
    return "schema-" + name.replace(/[^A-Za-z0-9_-]/g, "_");
  }

  /* ---- schemas ---- */

  function typeLabel(s) {
    if (!s || typeof s !== "object") return "any";
    if (s.$ref) return refName(s.$ref);
    if ("const" in s) return JSON.stringify(s.const);
    if (Array.isArray(s.enum)) return "one of " + s.enum.map((v) => JSON.stringify(v)).join(", ");
    if (s.oneOf) return "one of";
    if (s.anyOf) return "any of";
    if (s.allOf) return "all of";
    let t = Array.isArray(s.type) ? s.type.join(" | ") : s.type;
    if (t === "array") t = "array of " + typeLabel(s.items);
    if (!t && s.properties) t = "object";
    if (!t && s.additionalProperties) t = "object";
    if (s.format) t = (t || "") + " (" + s.format + ")";
    if (s.contentEncoding) t = (t || "") + " (" + s.contentEncoding + ")";
    return t || "any";
  }

  function constraints(s) {
    const out = [];
    const add = (k, label) => {
      if (s[k] !== undefined) out.push(label + " " + JSON.stringify(s[k]));
    };
    add("minimum", "≥");
    add("exclusiveMinimum", ">");
    add("maximum", "≤");
    add("exclusiveMaximum", "<");
    add("minLength", "min length");
    add("maxLength", "max length");
    add("minItems", "min items");
    add("maxItems", "max items");
    add("default", "default");
    add("pattern", "pattern");
    return out.join(", ");
  }

  /* A schema as a nested list; $refs are resolved, each name expanded once per branch. */
  function schemaTree(s, seen) {
    seen = seen || new Set();
    if (!s || typeof s !== "object") return null;
    if (s.$ref) {
      const name = refName(s.$ref);
      const target = resolve(s.$ref);
      if (!target) return el("span", { class: "req" }, "unresolved $ref " + s.$ref);
      if (seen.has(name)) return el("span", null, "see ", el("a", { href: "#" + anchor(name) }, name));
      const next = new Set(seen);
      next.add(name);
      return schemaTree(target, next);
    }
    const parts = [];
    const variants = s.oneOf || s.anyOf || s.allOf;
    if (variants) {
      parts.push(el("ul", null, variants.map((v, i) =>
        el("li", null, el("span", { class: "type" }, "variant " + (i + 1) + ": " + typeLabel(v)), schemaTree(v, seen)))));
    }
    if (s.properties) {
      const req = new Set(s.required || []);
      parts.push(el("ul", null, Object.entries(s.properties).map(([name, p]) => {
        const c = p && typeof p === "object" ? constraints(p) : "";
        return el("li", null,
          el("span", { class: "prop" }, name), " ",
          el("span", { class: "type" }, typeLabel(p)),
          req.has(name) ? [" ", el("span", { class: "req" }, "required")] : null,
          p && p.description ? [" — ", el("span", { class: "desc" }, prose(p.description))] : null,
          c ? el("span", { class: "type" }, " (" + c + ")") : null,
          schemaTree(p, seen));
      })));
    } else if (s.type === "array" && s.items && (s.items.$ref || s.items.properties)) {
      parts.push(el("ul", null, el("li", null, el("span", { class: "type" }, "items: " + typeLabel(s.items)), schemaTree(s.items, seen))));
    } else if (s.additionalProperties && typeof s.additionalProperties === "object") {
      parts.push(el("ul", null, el("li", null, el("span", { class: "prop" }, "{name}"), " ",
        el("span", { class: "type" }, typeLabel(s.additionalProperties)), schemaTree(s.additionalProperties, seen))));
    }
    if (parts.length === 0) return null;
    return el("div", { class: "schema" }, parts);
  }

  function schemaBlock(s) {
    return el("div", { class: "schema" },
      el("p", null, "Schema: ", s && s.$ref ? el("a", { href: "#" + anchor(refName(s.$ref)) }, refName(s.$ref)) : el("span", { class: "type" }, typeLabel(s))),
      schemaTree(s));
  }

  /* ---- examples for "try it" ---- */

  function sample(s, depth) {
    s = deref(s);
    if (depth > 4) return null;
    if (s.example !== undefined) return s.example;
    if (Array.isArray(s.examples) && s.examples.length) return s.examples[0];
    if ("const" in s) return s.const;
    if (Array.isArray(s.enum)) return s.enum[0];
    const t = Array.isArray(s.type) ? s.type[0] : s.type;
    if (t === "object" || s.properties) {
      const out = {};
      for (const k of s.required || []) out[k] = sample((s.properties || {})[k] || {}, depth + 1);
      return out;
    }
    if (t === "array") return [];
    if (t === "string") return "";
    if (t === "integer" || t === "number") return 0;
    if (t === "boolean") return false;
    return null;
  }

  function bodyExample(media) {
    if (media.example !== undefined) return media.example;
    if (media.examples) {
      const first = Object.values(media.examples)[0];
      if (first && first.value !== undefined) return first.value;
    }
    return sample(media.schema || {}, 0);
  }

  /* ---- operations ---- */

  function paramsTable(params) {
    return el("div", { class: "table-wrap" },
      el("table", null,
        el("thead", null, el("tr", null, ["Name", "In", "Type", "Description"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", null, params.map((p0) => {
          const p = deref(p0);
          return el("tr", null,
            el("td", null, el("code", null, p.name), p.required ? [" ", el("span", { class: "req" }, "required")] : null),
            el("td", null, p.in || ""),
            el("td", null, el("span", { class: "type" }, typeLabel(p.schema))),
            el("td", null, prose(p.description || "")));
        }))));
  }

  function responses(op) {
    const out = [el("h4", null, "Responses")];
    for (const [code, r0] of Object.entries(op.responses || {})) {
      const r = deref(r0);
      const block = el("div", { class: "response" },
        el("p", null, el("span", { class: "status-code" }, code), " — ", prose(r.description || "")));
      if (r.headers) {
        block.append(el("ul", null, Object.entries(r.headers).map(([h, v0]) => {
          const v = deref(v0);
          return el("li", null, "Header ", el("code", null, h), v.description ? " — " + v.description : "");
        })));
      }
      for (const [type, media] of Object.entries(r.content || {})) {
        block.append(el("p", null, el("span", { class: "type" }, type)));
        if (media.schema) block.append(schemaBlock(media.schema));
      }
      out.push(block);
    }
    return out;
  }

  function tryIt(method, path, op, id) {
    const media = op.requestBody ? (deref(op.requestBody).content || {})["application/json"] : null;
    const box = el("div", { class: "try" }, el("h4", null, "Try it"));
    let ta = null;
    if (media) {
      ta = el("textarea", { id: id + "-body", rows: 6, spellcheck: "false" });
      ta.value = JSON.stringify(bodyExample(media), null, 2);
      box.append(el("label", { for: id + "-body" }, "Request body (JSON)"), ta);
    } else if (op.requestBody) {
      box.append(el("p", { class: "help" }, "This operation's body is not JSON; use curl to try it."));
      return box;
    }
    const out = el("div", { class: "try-out", role: "status", "aria-live": "polite" });
    const button = el("button", { type: "button", class: "primary", id: id + "-send" }, "Send " + method.toUpperCase() + " " + path);
    button.addEventListener("click", async () => {
      const headers = { Accept: "application/json" };
      const key = document.getElementById("try-key").value.trim();
      if (key) headers.Authorization = "Bearer " + key;
      const init = { method: method.toUpperCase(), headers };
      if (ta) {
        headers["Content-Type"] = "application/json";
        init.body = ta.value;
      }
      button.disabled = true;
      out.replaceChildren(el("p", null, "Sending…"));
      try {
        const r = await fetch(path, init);
        const text = await r.text();
        let pretty = text;
        try {
          pretty = JSON.stringify(JSON.parse(text), null, 2);
        } catch (e) { /* not JSON: show as it came */ }
        const retry = r.headers.get("Retry-After");
        out.replaceChildren(
          el("p", null, "HTTP ", el("span", { class: "status-code" }, String(r.status)), " ", r.statusText,
            retry ? " — retry after " + retry + " s" : ""),
          el("pre", { class: "stream", tabindex: "0", "aria-label": "Response body" }, pretty));
      } catch (e) {
        out.replaceChildren(el("p", { class: "error-text" }, "The request failed: the server could not be reached."));
      }
      button.disabled = false;
    });
    box.append(el("div", { class: "actions" }, button), out);
    return box;
  }

  function operation(path, method, op) {
    const id = "op-" + method + "-" + path.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "");
    const body = el("div", { class: "op-body" });
    if (op.description) body.append(el("p", null, prose(op.description)));
    if (op.deprecated) body.append(el("p", { class: "req" }, "Deprecated."));
    const params = op.parameters || [];
    if (params.length) body.append(el("h4", null, "Parameters"), paramsTable(params));
    if (op.requestBody) {
      const rb = deref(op.requestBody);
      body.append(el("h4", null, "Request body" + (rb.required ? " (required)" : "")));
      if (rb.description) body.append(el("p", null, rb.description));
      for (const [type, media] of Object.entries(rb.content || {})) {
        body.append(el("p", null, el("span", { class: "type" }, type)));
        if (media.schema) body.append(schemaBlock(media.schema));
      }
    }
    body.append(...responses(op));
    body.append(tryIt(method, path, op, id));
    return el("details", { class: "op", id },
      el("summary", null,
        el("span", { class: "method " + method }, method.toUpperCase()),
        el("span", { class: "path" }, path),
        op.summary ? el("span", { class: "op-summary" }, op.summary) : null),
      body);
  }

  function render() {
    const root = document.getElementById("api");
    const info = doc.info || {};
    root.append(el("p", null, el("strong", null, (info.title || "API") + " " + (info.version || "")),
      " · OpenAPI " + (doc.openapi || "?")));
    if (info.description) root.append(el("p", null, prose(info.description)));

    const schemes = (doc.components || {}).securitySchemes || {};
    if (Object.keys(schemes).length) {
      root.append(el("h2", null, "Authentication"),
        el("ul", null, Object.entries(schemes).map(([name, s]) =>
          el("li", null, el("code", null, name), ": " + [s.type, s.scheme, s.in, s.name].filter(Boolean).join(" "),
            s.description ? [" — ", prose(s.description)] : null))));
    }
    const keyField = el("div", { class: "field" },
      el("label", { for: "try-key" }, "API key for “Try it” (optional)"),
      el("input", { id: "try-key", type: "password", autocomplete: "off", spellcheck: "false" }));
    root.append(keyField);

    /* Group operations by their first tag, in the order the document's tags give. */
    const groups = new Map();
    for (const t of doc.tags || []) groups.set(t.name, { tag: t, ops: [] });
    let count = 0;
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const m of METHODS) {
        if (!item[m]) continue;
        const tag = (item[m].tags && item[m].tags[0]) || "Endpoints";
        if (!groups.has(tag)) groups.set(tag, { tag: { name: tag }, ops: [] });
        groups.get(tag).ops.push([path, m, item[m]]);
        count++;
      }
    }
    for (const { tag, ops } of groups.values()) {
      if (!ops.length) continue;
      const gid = "tag-" + tag.name.replace(/[^A-Za-z0-9]+/g, "-");
      root.append(el("h2", { id: gid }, tag.name));
      if (tag.description) root.append(el("p", null, prose(tag.description)));
      for (const [path, m, op] of ops) root.append(operation(path, m, op));
    }

    const schemas = (doc.components || {}).schemas || {};
    if (Object.keys(schemas).length) {
      root.append(el("h2", { id: "schemas" }, "Schemas"));
      for (const [name, s] of Object.entries(schemas)) {
        root.append(el("section", { id: anchor(name), "aria-label": "Schema " + name },
          el("h3", null, el("code", null, name)),
          s.description ? el("p", null, prose(s.description)) : null,
          el("p", null, el("span", { class: "type" }, typeLabel(s))),
          schemaTree(s, new Set([name]))));
      }
    }
    document.getElementById("api-status").textContent = count + " operations.";
  }

  document.addEventListener("DOMContentLoaded", async () => {
    window.pbx.fillOrigin();
    try {
      doc = await window.pbx.getJSON("/openapi.json");
    } catch (e) {
      const s = document.getElementById("api-status");
      s.textContent = "Could not load /openapi.json (" + e.message + ").";
      s.className = "error-text";
      return;
    }
    render();
    /* A link to #op-... opens that operation. */
    if (location.hash) {
      const target = document.getElementById(location.hash.slice(1));
      if (target && target.tagName === "DETAILS") target.open = true;
      if (target) target.scrollIntoView();
    }
  });
})();
