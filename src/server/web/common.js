/* Helpers shared by the docs page (app.js) and the API reference (docs.js). */
"use strict";

window.pbx = (function () {
  /* el("a", {href: "/x", class: "y"}, "text", child...): a DOM element; never parses HTML. */
  function el(tag, attrs) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (let i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) child.forEach((c) => append(node, c));
    else node.append(child instanceof Node ? child : String(child));
  }

  function bytes(n) {
    if (typeof n !== "number" || !isFinite(n)) return String(n);
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let u = 0;
    while (n >= 1024 && u < units.length - 1 && n % 1024 === 0) {
      n /= 1024;
      u++;
    }
    if (u === 0 && n >= 1024) {
      while (n >= 1024 && u < units.length - 1) {
        n /= 1024;
        u++;
      }
      return n.toFixed(1) + " " + units[u];
    }
    return n + " " + units[u];
  }

  function seconds(s) {
    return (Math.round(s * 1000) / 1000) + " s";
  }

  /* Show the page's own origin wherever an example needs the base URL. */
  function fillOrigin() {
    document.querySelectorAll(".origin").forEach((n) => {
      n.textContent = window.location.origin;
    });
  }

  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(url + " answered HTTP " + r.status);
    return r.json();
  }

  return { el, bytes, seconds, fillOrigin, getJSON };
})();
