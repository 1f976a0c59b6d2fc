// Beacon dashboard: fills the server-rendered panels from same-origin JSON; the URL is the state.
"use strict";
(function () {
  const base = document.body.dataset.base;
  const params = new URLSearchParams(location.search);
  const LABELS = {
    "event:page": "Page", "visit:entry_page": "Entry page", "visit:exit_page": "Exit page",
    "visit:source": "Source", "visit:channel": "Channel", "visit:utm_campaign": "Campaign",
    "visit:browser": "Browser", "visit:os": "OS", "visit:device": "Device", "visit:country": "Country",
    "event:name": "Event", step: "Step", conversion_rate: "Conversion", dropoff: "Drop-off", time: "Time", visitors: "Visitors", visits: "Visits",
    pageviews: "Pageviews", events: "Events", conversions: "Conversions",
  };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(metric, value) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "object") {  // revenue: an amount per currency
      const parts = Object.entries(value).map(([c, v]) => c + " " + Number(v).toLocaleString("en", { minimumFractionDigits: 2 }));
      return parts.length ? parts.join(", ") : "0";
    }
    if (metric === "conversion_rate") return value + "%";
    if (metric === "bounce_rate") return Math.round(value) + "%";
    if (metric === "visit_duration") {
      const s = Math.round(value);
      return s >= 60 ? Math.floor(s / 60) + "m " + (s % 60) + "s" : s + "s";
    }
    if (typeof value === "number") return value.toLocaleString("en");
    return String(value);
  }

  function num(value) {  // a comparable number; revenue only when it is in one currency
    if (value === null || typeof value !== "object") return Number(value);
    const amounts = Object.values(value);
    return amounts.length === 1 ? Number(amounts[0]) : NaN;
  }

  function withFilter(dimension, value) {
    const next = new URLSearchParams(params);
    const f = dimension + "=" + value;
    if (!next.getAll("f").includes(f)) next.append("f", f);
    return "?" + next.toString();
  }

  function without(filter) {
    const next = new URLSearchParams();
    for (const [k, v] of params) if (!(k === "f" && v === filter)) next.append(k, v);
    return "?" + next.toString();
  }

  function table(columns, rows, dimension) {
    const t = el("table");
    const head = t.createTHead().insertRow();
    for (const c of columns) head.appendChild(el("th", { scope: "col" }, LABELS[c] || c.replace(/^event:props:/, "")));
    const body = t.createTBody();
    for (const row of rows) {
      const tr = body.insertRow();
      row.forEach((value, i) => {
        const td = tr.insertCell();
        if (i === 0 && dimension) {
          const label = value === "" ? "(none)" : String(value);
          td.appendChild(el("a", { href: withFilter(dimension, value), title: "Filter by " + label }, label));
        } else {
          td.textContent = fmt(columns[i], value);
        }
      });
    }
    if (!rows.length) {
      const td = body.insertRow().insertCell();
      td.colSpan = columns.length;
      td.textContent = "No data for this period.";
    }
    return t;
  }

  function unavailable(box, reason) {
    box.replaceChildren(el("p", { class: "na", title: reason }, "Not available"));
    box.closest("[data-panel]").classList.add("off");
  }

  async function load(name) {
    const res = await fetch(base + "/api/panel/" + name + location.search, { credentials: "same-origin" });
    if (res.status === 401) { location.reload(); return null; }
    if (!res.ok) throw new Error((await res.json()).error || res.statusText);
    return res.json();
  }

  function headline(data) {
    if (typeof data.unavailable === "string") {  // the whole request failed: every card says so
      const reason = data.unavailable;
      data = { current: {}, previous: {}, unavailable: {} };
      for (const card of document.querySelectorAll(".card")) data.unavailable[card.dataset.metric] = reason;
    }
    if (data.range) {
      document.getElementById("range").textContent =
        data.range.current.join(" to ") + " (UTC), compared with " + data.range.previous.join(" to ");
    }
    for (const card of document.querySelectorAll(".card")) {
      const m = card.dataset.metric;
      const value = card.querySelector(".value");
      const change = card.querySelector(".change");
      if (m in data.unavailable) {
        value.textContent = "not available";
        card.title = data.unavailable[m];
        card.classList.add("off");
        continue;
      }
      value.textContent = fmt(m, data.current[m]);
      const now = num(data.current[m]);
      const before = num(data.previous[m]);
      if (before > 0 && !Number.isNaN(now)) {
        const pct = Math.round(((now - before) / before) * 100);
        change.textContent = (pct > 0 ? "+" : "") + pct + "% vs previous";
      } else {
        change.textContent = "previous: " + fmt(m, data.previous[m]);
      }
    }
  }

  function series(section, data) {
    const box = section.querySelector(".table");
    if (data.unavailable) { unavailable(box, data.unavailable); return; }
    box.replaceChildren(table(data.columns, data.rows, null));
    const chart = section.querySelector(".chart");
    if (!window.uPlot || !data.rows.length) return;
    const hourly = String(data.rows[0][0]).length > 10;
    const xs = data.rows.map((r) => Date.parse(String(r[0]).replace(" ", "T") + (hourly ? "Z" : "T00:00:00Z")) / 1000);
    const opts = {
      width: Math.max(300, chart.clientWidth), height: 220,
      // UTC days and hours, as the table and the range line, whatever the browser's time zone
      tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      series: [
        { label: "Time (UTC)", value: hourly ? "{YYYY}-{MM}-{DD} {HH}:{mm}" : "{YYYY}-{MM}-{DD}" },
        { label: "Visitors", stroke: "#2563eb", width: 2 },
        { label: "Pageviews", stroke: "#16a34a", width: 2 },
      ],
      axes: [{}, {}],
    };
    chart.replaceChildren();
    new window.uPlot(opts, [xs, data.rows.map((r) => r[1]), data.rows.map((r) => r[2])], chart);
  }

  async function fill(section) {
    const name = section.dataset.panel;
    let data;
    try {
      data = await load(name);
    } catch (err) {
      data = { unavailable: String(err.message || err) };
    }
    if (!data) return;
    if (name === "headline") { headline(data); return; }
    if (name === "realtime") {
      section.querySelector("b").textContent = data.unavailable ? "not available" : fmt("visitors", (data.rows[0] || [0])[0]);
      return;
    }
    if (name === "series") { series(section, data); return; }
    const box = section.querySelector(".table");
    if (data.unavailable) { unavailable(box, data.unavailable); return; }
    if (data.hint) { box.replaceChildren(el("p", { class: "muted" }, data.hint)); return; }
    box.replaceChildren(table(data.columns, data.rows, data.dimension));
    if (data.note) box.appendChild(el("p", { class: "muted" }, data.note));
  }

  function controls() {
    const form = document.getElementById("controls");
    const period = document.getElementById("period");
    period.value = params.get("period") || "7d";
    document.getElementById("from").value = params.get("from") || "";
    document.getElementById("to").value = params.get("to") || "";
    const prop = document.getElementById("prop");
    if (prop) prop.value = params.get("prop") || "";
    const custom = document.getElementById("custom");
    custom.hidden = period.value !== "custom";
    // A period picked with the mouse or a finger applies at once; the keyboard's arrows only move
    // the choice, which Enter or Apply applies (WCAG 3.2.2: no navigation on a mere change).
    let pointer = false;
    period.addEventListener("pointerdown", () => { pointer = true; });
    period.addEventListener("keydown", (e) => {
      pointer = false;
      if (e.key === "Enter") { e.preventDefault(); form.requestSubmit(); }
    });
    period.addEventListener("change", () => {
      custom.hidden = period.value !== "custom";
      if (pointer && period.value !== "custom") form.requestSubmit();
      pointer = false;
    });
    const chips = document.getElementById("filters");
    for (const f of new Set(params.getAll("f"))) {  // the same filter twice is one filter (as the server reads it)
      form.appendChild(el("input", { type: "hidden", name: "f", value: f }));
      const i = f.indexOf("=");
      const chip = el("a", { href: without(f), class: "chip", title: "Remove this filter" });
      chip.textContent = (LABELS[f.slice(0, i)] || f.slice(0, i)) + " is " + f.slice(i + 1) + " ✕";
      chips.appendChild(chip);
    }
    for (const a of document.querySelectorAll("a[data-csv]")) a.href = base + "/api/csv/" + a.dataset.csv + location.search;
  }

  controls();
  const sections = Array.from(document.querySelectorAll("[data-panel]"));
  // One at a time: the server serialises queries anyway, and the order keeps the top of the page first.
  (async () => {
    for (const s of sections) {
      try { await fill(s); } catch (err) { console.warn("panel", s.dataset.panel, err); }
    }
    document.body.dataset.loaded = "1";
  })();
  const realtime = document.getElementById("realtime");
  if (realtime) setInterval(() => fill(realtime), 15000);
})();
