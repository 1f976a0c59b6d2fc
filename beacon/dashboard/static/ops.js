// Operators' page: polls /dashboard/ops/data and renders each group as a small table.
"use strict";
(function () {
  const base = document.body.dataset.base;
  const box = document.getElementById("ops");

  function section(title, entries) {
    const s = document.createElement("section");
    s.className = "panel";
    const h = document.createElement("h2");
    h.textContent = title;
    const t = document.createElement("table");
    for (const [k, v] of entries) {
      const tr = t.insertRow();
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = k;
      tr.appendChild(th);
      tr.insertCell().textContent = typeof v === "boolean" ? (v ? "yes" : "NO") : String(v);
    }
    if (!entries.length) t.insertRow().insertCell().textContent = "none";
    s.append(h, t);
    return s;
  }

  async function refresh() {
    const res = await fetch(base + "/ops/data", { credentials: "same-origin" });
    if (res.status === 401) { location.reload(); return; }
    const d = await res.json();
    box.replaceChildren(
      section("Health", [["Redis answers", d.redis.ok], ["Redis ping ms", d.redis.ms ?? d.redis.error],
        ["ClickHouse answers", d.clickhouse.ok], ["ClickHouse ping ms", d.clickhouse.ms]]),
      section("Stream", Object.entries(d.stream)),
      section("Spool", Object.entries(d.spool)),
      section("Flusher", Object.entries(d.flush)),
      section("Ingest per scope (events)", Object.entries(d.ingest)),
      section("Dropped, by reason", Object.entries(d.drops)),
    );
    document.body.dataset.loaded = "1";
  }
  refresh();
  setInterval(refresh, 5000);
})();
