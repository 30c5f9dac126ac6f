"use strict";
// jsreplay show --format html. Everything from the cassette is untrusted: it only ever reaches the page through
// textContent (never innerHTML), attribute values are numbers or fixed class names.
(function () {
  const BATCH = 250;
  const t0 = performance.now();
  const $ = (id) => document.getElementById(id);
  const read = (id) => JSON.parse($(id).textContent);
  const header = read("jsreplay-header");
  const report = read("jsreplay-report");
  const rows = read("jsreplay-rows"); // [id, start_ns, duration_ns, role, caller, method, status, end, inner]
  let details = null;
  const detailOf = (index) => (details || (details = read("jsreplay-details")))[index];
  const indexById = new Map(rows.map((r, i) => [r[0], i]));
  const span = rows.reduce((a, r) => Math.max(a, (r[1] || 0) + (r[2] || 0)), 1);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  const secs = (ns) => (ns === null || ns === undefined ? "" : "+" + (ns / 1e9).toFixed(3) + "s");
  const ms = (ns) => (ns === null || ns === undefined ? "" : (ns / 1e6).toFixed(1) + " ms");
  const base = (p) => String(p).split("/").pop();

  // ------------------------------------------------------------------------------------------ replay report
  const marks = new Map(); // call id -> [[kind, text]]
  function mark(id, kind, text) {
    if (!marks.has(id)) marks.set(id, []);
    marks.get(id).push([kind, text]);
  }
  function idsIn(text) {
    const found = [];
    const re = /([^\s'"(),]+)#(\d+)/g;
    let m;
    while ((m = re.exec(String(text))) !== null) {
      if (base(m[1]) === base(header.cassette)) found.push(Number(m[2]));
    }
    return found;
  }
  if (report) {
    for (const m of report.missed || []) for (const id of idsIn(m.reason)) mark(id, "miss", "nearest recording of a miss: " + m.reason);
    for (const m of report.errors || []) for (const id of idsIn(m.reason)) mark(id, "error", m.reason);
    for (const t of report.causal_timeouts || []) for (const id of idsIn(t)) mark(id, "timeout", t);
    for (const u of report.unused || []) for (const id of idsIn(u.recording)) mark(id, "unused", "not used by the replay");
    for (const u of (report.tunnels && report.tunnels.unused) || []) for (const id of idsIn(u)) mark(id, "unused", "tunnel not used");
  }

  // ------------------------------------------------------------------------------------------ values
  function bytesText(b64) {
    const raw = atob(b64);
    let hex = "";
    for (let i = 0; i < Math.min(raw.length, 32); i++) hex += raw.charCodeAt(i).toString(16).padStart(2, "0");
    return raw.length <= 32 ? "0x" + hex : `<${raw.length} bytes> 0x${hex}…`;
  }
  function scalar(v) {
    if (v === null) return "null";
    if (typeof v === "string") return JSON.stringify(v);
    if (typeof v !== "object") return String(v);
    if ("$bytes" in v) return bytesText(v.$bytes);
    if ("$bytes_len" in v) return `<${v.$bytes_len} bytes, sha256 ${v.$sha256.slice(0, 12)}> ` + bytesText(v.$head);
    if ("$float" in v) return v.$float;
    if ("$unknown" in v) return `unknown field ${v.$unknown.number} (${v.$unknown.wire_type}): ` + scalar(v.$unknown.value);
    return null;
  }
  function lines(v, indent, out) {
    const s = scalar(v);
    if (s !== null) return s;
    const pad = "  ".repeat(indent + 1);
    const entries = Array.isArray(v) ? v.map((x, i) => ["[" + i + "]", x]) : Object.entries(v);
    if (!entries.length) return Array.isArray(v) ? "[]" : "{}";
    for (const [k, x] of entries) {
      const sub = [];
      const text = lines(x, indent + 1, sub);
      if (text === "") { out.push(pad + k + ":"); out.push(...sub); } else out.push(pad + k + ": " + text);
    }
    return "";
  }
  function valueText(v) {
    const out = [];
    const s = lines(v, -1, out);
    return s !== "" ? s : out.join("\n");
  }
  function hexdump(b64, total) {
    const raw = atob(b64);
    const out = [];
    for (let off = 0; off < raw.length; off += 16) {
      let hex = "", text = "";
      for (let i = off; i < off + 16; i++) {
        if (i < raw.length) {
          const c = raw.charCodeAt(i);
          hex += c.toString(16).padStart(2, "0") + " ";
          text += c >= 32 && c < 127 ? raw[i] : ".";
        } else hex += "   ";
      }
      out.push(off.toString(16).padStart(8, "0") + "  " + hex + " |" + text + "|");
    }
    if (total > raw.length) out.push(`… ${total - raw.length} more bytes`);
    return out.join("\n");
  }

  // ------------------------------------------------------------------------------------------ details
  function metadataTable(title, md, into) {
    if (!md || !md.length) return;
    into.append(el("h4", null, title));
    const table = el("table");
    for (const [k, v] of md) {
      const tr = el("tr");
      tr.append(el("td", null, k), el("td", null, typeof v === "string" ? v : scalar(v)));
      table.append(tr);
    }
    into.append(table);
  }
  function messages(title, arrow, list, into) {
    if (!list || !list.length) return;
    into.append(el("h4", null, `${title} (${list.length})`));
    for (const m of list) {
      let text = arrow + " " + (m.type || "?");
      if (m.value !== null) text += "\n" + valueText(m.value);
      else if (m.error) text += `  (${m.error})` + (m.raw ? "\n0x" + m.raw.slice(0, 256) : "");
      into.append(el("pre", "msg", text));
    }
  }
  function detailNode(call, path) {
    const box = el("div", "detail");
    const facts = [];
    if (call.method) facts.push(call.method);
    if (call.timeout_ns) facts.push("deadline " + ms(call.timeout_ns));
    if (call.details) facts.push("details: " + call.details);
    box.append(el("div", "meta", facts.join(" · ")));
    for (const [kind, text] of marks.get(call.role === "tunnel" ? -1 : call.id) || []) box.append(el("div", "banner", kind + ": " + text));
    metadataTable("request metadata", call.metadata, box);
    metadataTable("initial metadata", call.initial_metadata, box);
    metadataTable("trailing metadata", call.trailing_metadata, box);
    messages("requests", ">", call.requests, box);
    messages("responses", "<", call.responses, box);
    if (call.stream) {
      const s = call.stream;
      box.append(el("h4", null, "router stream"));
      box.append(el("div", "meta", `${s.side} end${s.peer !== null ? ", peer #" + s.peer : ""}${s.probe ? ", readiness probe" : ""}; ` +
        `${s.frames_out} frames out (${s.bytes_out} B), ${s.frames_in} in (${s.bytes_in} B)` + (s.error ? "; " + s.error : "")));
    }
    if (call.byte_stream) {
      for (const [dir, d] of Object.entries(call.byte_stream)) {
        box.append(el("h4", null, `bytes ${dir === "out" ? "sent" : "received"}: ${d.bytes} in ${d.frames} frames`));
        if (d.bytes) box.append(el("pre", "hex", hexdump(d.head, d.bytes)));
      }
    }
    if (call.elided) {
      box.append(el("div", "banner", `upload kept as length and digest only: ${call.elided.length} bytes, ` +
        (call.elided.sha256 ? "sha256:" + call.elided.sha256 : "no digest (the recording stops before its end)")));
    }
    if (call.tunnel) {
      box.append(el("h4", null, `tunnel: ${call.tunnel.length} inner call(s)`));
      const inner = el("div", "inner");
      call.tunnel.forEach((c) => inner.append(...rowNode(innerSummary(c), c, path + "." + c.id)));
      box.append(inner);
    } else if (call.stream && !call.stream.holds_inner && call.stream.peer !== null) {
      box.append(el("div", "note", `inner calls are listed under its peer, #${call.stream.peer}`));
    }
    return box;
  }
  const innerSummary = (c) => [c.id, null, null, c.role, c.caller, c.short_method, c.status, endLabel(c), c.tunnel ? c.tunnel.length : null];
  function endLabel(c) {
    const e = c.end;
    if (e.kind === "status") return c.details ? `${c.status}: ${c.details}` : c.status;
    if (e.kind === "cancel") return "cancelled by " + e.by;
    if (e.kind === "reset") return "reset by " + e.by;
    if (e.kind === "closed") return "closed with its connection";
    return "no end recorded";
  }

  // ------------------------------------------------------------------------------------------ rows
  const opened = new Map(); // path -> detail node
  const callOf = new WeakMap(); // inner rows -> their call
  function rowNode(r, call, path) {
    const [id, start, dur, role, caller, method, status, end, inner] = r;
    const row = el("div", "row");
    row.dataset.path = path;
    const who = el("span", "who");
    who.append(el("span", caller === "Client" || caller === "Exporter" ? caller : "peer", caller || "-"), el("span", "arrow", "→"),
      el("span", null, role === "tunnel" ? "Exporter (tunnel)" : role === "router" ? "Router" : "Controller"));
    const m = el("span", "m", method);
    if (inner !== null) m.append(el("span", "badge", inner + " inner"));
    if (role === "tunnel") m.append(el("span", "badge", "stream " + id)); else m.append(el("span", "badge", "#" + id));
    const bad = status !== null && status !== "OK" && status !== "CANCELLED";
    for (const [kind] of (role !== "tunnel" && marks.get(id)) || []) { m.append(el("span", "badge " + kind, kind)); row.classList.add(kind); }
    const endNode = el("span", "end" + (bad ? " bad" : status === "CANCELLED" ? " cancel" : ""), end);
    const track = el("span", "track");
    if (start !== null) {
      const bar = el("span", "bar" + (role === "router" ? " router" : "") + (bad ? " bad" : ""));
      bar.style.left = (100 * start / span).toFixed(3) + "%";
      bar.style.width = (100 * (dur || 0) / span).toFixed(3) + "%";
      track.append(bar);
      track.title = ms(dur);
    } else track.append(el("span", "dur", ""));
    row.append(el("span", "t", role === "tunnel" ? "" : secs(start)), who, m, endNode, track);
    if (call) callOf.set(row, call);
    row.addEventListener("click", () => toggle(row));
    return [row];
  }
  function toggle(row, call, open) {
    const path = row.dataset.path;
    const isOpen = opened.has(path);
    if (open === undefined) open = !isOpen;
    if (open === isOpen) return opened.get(path);
    if (open) {
      const c = call || callOf.get(row) || detailOf(indexById.get(Number(path)));
      const node = detailNode(c, path);
      row.after(node);
      row.classList.add("open");
      opened.set(path, node);
      return node;
    }
    opened.get(path).remove();
    opened.delete(path);
    row.classList.remove("open");
    return null;
  }

  // ------------------------------------------------------------------------------------------ page
  const app = $("app");
  app.textContent = "";
  app.append(el("h1", null, header.cassette));
  const when = new Date(header.created_unix_ns / 1e6).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  app.append(el("div", "meta", `format ${header.format_version}, jsreplay ${header.jsreplay_version}, recorded ${when}; ` +
    `upstreams: ${(header.upstreams || []).join(", ") || "-"}; ${rows.length} calls, ${header.events} events`));
  const r = header.redaction || {};
  app.append(el("div", "meta", "redaction: " + (r.enabled ? "on" : "OFF (secrets are in this cassette)") +
    (r.fields && r.fields.length ? "; fields: " + r.fields.join(", ") : "")));
  for (const e of header.redactions || []) app.append(el("div", "meta", `re-redacted by ${e.by} at ${new Date(e.at_unix_ns / 1e6).toISOString()}` +
    (e.scrubbed_values ? `, ${e.scrubbed_values} value(s) scrubbed` : "")));
  for (const e of header.edits || []) app.append(el("div", "meta", `edited by ${e.by} at ${new Date(e.at_unix_ns / 1e6).toISOString()}`));
  if (report) {
    const bad = (report.missed || []).length + (report.errors || []).length + (report.causal_timeouts || []).length;
    const banner = el("div", "banner" + (bad ? "" : " ok"));
    banner.append(el("strong", null, `replay report: ${(report.missed || []).length} missed, ${(report.errors || []).length} errors, ` +
      `${(report.causal_timeouts || []).length} causal timeouts, ${(report.unused || []).length} recordings unused`));
    const list = el("ul");
    for (const m of report.missed || []) list.append(el("li", null, `miss at +${m.at_s}s: ${m.method}: ${m.reason}`));
    for (const m of report.errors || []) list.append(el("li", null, `error at +${m.at_s}s: ${m.method}: ${m.reason}`));
    for (const t of report.causal_timeouts || []) list.append(el("li", null, "causal timeout: " + t));
    banner.append(list);
    app.append(banner);
  }
  const tools = el("div", "tools");
  const filter = el("input");
  filter.placeholder = "filter: method, caller or status";
  filter.type = "search";
  tools.append(filter, el("span", "legend note", "click a row to expand it; a tunnel lists its inner calls"));
  app.append(tools);
  const list = el("div");
  list.id = "calls";
  app.append(list);
  const more = el("div", null, "");
  more.id = "more";
  app.append(more);

  let shown = rows.map((_, i) => i);
  let next = 0;
  function renderBatch() {
    const end = Math.min(next + BATCH, shown.length);
    const frag = document.createDocumentFragment();
    for (; next < end; next++) {
      const i = shown[next];
      frag.append(...rowNode(rows[i], null, String(rows[i][0])));
    }
    list.append(frag);
    more.textContent = next < shown.length ? `${shown.length - next} more calls: scroll to load` : `${shown.length} calls`;
  }
  new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting) && next < shown.length) renderBatch(); }).observe(more);
  filter.addEventListener("input", () => {
    const q = filter.value.toLowerCase();
    shown = rows.map((_, i) => i).filter((i) => !q || [rows[i][5], rows[i][4], rows[i][7]].join(" ").toLowerCase().includes(q));
    list.textContent = "";
    opened.clear();
    next = 0;
    renderBatch();
  });

  function expandFromHash() {
    const m = /(?:^#|&)expand=([^&]*)/.exec(location.hash);
    if (!m) return;
    const want = decodeURIComponent(m[1]);
    if (want === "all") {
      for (const row of Array.from(list.children)) {
        if (!row.classList.contains("row")) continue;
        const node = toggle(row, null, true);
        if (node) for (const inner of node.querySelectorAll(".inner > .row")) inner.click();
      }
      return;
    }
    for (const path of want.split(",")) {
      const parts = path.split(".");
      const idx = indexById.get(Number(parts[0]));
      if (idx === undefined) continue;
      while (next <= shown.indexOf(idx) && next < shown.length) renderBatch();
      let row = list.querySelector(`.row[data-path="${Number(parts[0])}"]`);
      let node = row && toggle(row, null, true);
      for (let k = 1; k < parts.length && node; k++) {
        const p = parts.slice(0, k + 1).map(Number).join(".");
        row = node.querySelector(`.row[data-path="${p}"]`);
        node = row && toggle(row, null, true);
      }
    }
  }
  renderBatch();
  // When the first rows are in the DOM (from navigation start, the HTML and its data parsed); the paint follows.
  document.documentElement.dataset.firstRowsMs = performance.now().toFixed(0);
  document.documentElement.dataset.scriptMs = (performance.now() - t0).toFixed(0);
  expandFromHash();
  window.addEventListener("hashchange", expandFromHash);
  app.dataset.ready = "1";
  requestAnimationFrame(() => { document.documentElement.dataset.firstPaintMs = performance.now().toFixed(0); });
})();
