
"use strict";
// Request ids, routes, table names and SQL come from clients: every one of
// them goes into the page through textContent, never as markup (the CSP
// also refuses inline handlers and, through Trusted Types, any HTML sink).
(function () {
  const POLL_MS = 1000;
  const byId = (id) => document.getElementById(id);
  const list = byId("finding-list");
  const filters = {
    kind: byId("filter-kind"),
    route: byId("filter-route"),
    severity: byId("filter-severity"),
  };
  // Finding id -> {json, el}: an unchanged finding keeps its element, so an
  // expanded one stays expanded across updates.
  const shown = new Map();
  let findings = [];

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function ms(value) {
    if (value >= 100) return value.toFixed(0);
    if (value >= 1) return value.toFixed(2);
    return value.toFixed(3);
  }

  function routeKey(route) {
    return route === null || route === undefined ? "n:" : "r:" + route;
  }

  function setText(id, value) {
    const e = byId(id);
    const text = String(value);
    if (e.textContent !== text) e.textContent = text;
  }

  function renderCoverage(data) {
    const s = data.summary;
    setText("cov-queries", s.queries);
    setText("cov-fingerprints", s.fingerprints);
    setText("cov-requests", s.requests);
    setText("cov-correlated", (s.correlated_fraction * 100).toFixed(1) + "%");
    setText("cov-parse-failures", s.parse_failures);
    setText("cov-dropped", s.dropped_events);
    setText("cov-not-analysed", s.statements_not_analysed);
    setText("cov-catalog", s.catalog);
    byId("warnings").replaceChildren(...data.warnings.map((w) => el("li", "", w)));
  }

  function fact(dl, label, value, className) {
    if (value === null || value === undefined || value === "") return;
    dl.append(el("dt", "", label), el("dd", className || "", value));
  }

  function section(body, title, text, className) {
    if (text === null || text === undefined) return;
    body.append(el("h3", "", title), el("pre", className, text));
  }

  function findingElement(f) {
    const li = el("li", "finding");
    li.dataset.id = f.id;
    li.dataset.kind = f.kind;
    li.dataset.severity = f.severity;
    li.dataset.route = routeKey(f.route);
    const details = el("details");
    const summary = el("summary", "finding-summary");
    summary.append(
      el("span", "severity severity-" + f.severity, f.severity),
      el("span", "kind", f.kind),
      el("span", "sentence", f.sentence)
    );
    const meta = [];
    if (f.route) meta.push("route " + f.route);
    meta.push(f.occurrences + "× seen");
    summary.append(el("span", "meta", meta.join(" · ")));
    const body = el("div", "body");
    body.append(el("p", "heading note", f.heading));
    const dl = el("dl", "facts");
    fact(dl, "request id", f.request_id, "request-id");
    fact(dl, "route", f.route, "route");
    fact(dl, "grouped by", f.correlation);
    fact(dl, "table", f.table);
    fact(dl, "columns", f.columns.join(", "));
    fact(dl, "count", f.count);
    fact(dl, "rows (max)", f.rows_max);
    fact(dl, "fingerprint", f.fingerprint);
    fact(dl, "first seen", new Date(f.first_seen_ms).toLocaleString());
    fact(dl, "last seen", new Date(f.last_seen_ms).toLocaleString());
    body.append(dl);
    section(body, "Query", f.query, "query");
    if (f.parent) {
      section(body, "Parent query (" + f.parent.fingerprint + ")", f.parent.query, "parent");
    }
    section(body, "Suggestion", f.suggestion, "suggestion");
    if (f.hypopg) body.append(el("p", "hypopg note", f.hypopg));
    details.append(summary, body);
    li.append(details);
    return li;
  }

  function matches(f) {
    return (
      (!filters.kind.value || f.kind === filters.kind.value) &&
      (!filters.route.value || routeKey(f.route) === filters.route.value) &&
      (!filters.severity.value || f.severity === filters.severity.value)
    );
  }

  function applyFilters() {
    let visible = 0;
    for (const f of findings) {
      const entry = shown.get(f.id);
      const show = matches(f);
      entry.el.hidden = !show;
      if (show) visible += 1;
    }
    setText("findings-count", findings.length ? "(" + visible + " of " + findings.length + ")" : "");
    byId("findings-empty").hidden = visible > 0;
    byId("findings-empty").textContent = findings.length ? "No finding matches the filters." : "No findings yet.";
  }

  // Rebuilds a filter's options from the values present, keeping the
  // current choice even when its findings are gone.
  function refreshOptions(select, values, label) {
    const current = select.value;
    const wanted = new Map(values);
    if (current && !wanted.has(current)) wanted.set(current, label(current));
    const existing = Array.from(select.options).slice(1).map((o) => o.value + "\u0000" + o.textContent);
    const next = Array.from(wanted.entries()).sort((a, b) => a[1].localeCompare(b[1]));
    if (existing.join("\u0001") === next.map((e) => e[0] + "\u0000" + e[1]).join("\u0001")) return;
    const first = select.options[0];
    const options = next.map(([value, text]) => {
      const o = el("option", "", text);
      o.value = value;
      return o;
    });
    select.replaceChildren(first, ...options);
    select.value = current;
  }

  function renderFindings(data) {
    findings = data.findings;
    const els = [];
    const seen = new Set();
    for (const f of findings) {
      const json = JSON.stringify(f);
      let entry = shown.get(f.id);
      if (!entry || entry.json !== json) {
        const fresh = findingElement(f);
        if (entry && entry.el.firstChild.open) fresh.firstChild.open = true;
        entry = { json: json, el: fresh };
        shown.set(f.id, entry);
      }
      seen.add(f.id);
      els.push(entry.el);
    }
    for (const id of Array.from(shown.keys())) {
      if (!seen.has(id)) shown.delete(id);
    }
    list.replaceChildren(...els);
    refreshOptions(filters.kind, findings.map((f) => [f.kind, f.kind]), (v) => v);
    refreshOptions(
      filters.route,
      findings.map((f) => [routeKey(f.route), f.route === null ? "(no route)" : f.route]),
      (v) => (v === "n:" ? "(no route)" : v.slice(2))
    );
    applyFilters();
  }

  function renderFingerprints(rows) {
    byId("fingerprint-rows").replaceChildren(
      ...rows.map((r) => {
        const tr = el("tr");
        tr.append(
          el("td", "num total", ms(r.total_ms)),
          el("td", "num calls", r.calls),
          el("td", "num mean", ms(r.mean_ms)),
          el("td", "", r.kind),
          el("td", "fingerprint", r.fingerprint),
          el("td", "sql", r.query)
        );
        return tr;
      })
    );
  }

  function renderRoutes(rows) {
    const names = { no_route: "(no route)", other_routes: "(other routes, pooled)" };
    byId("route-rows").replaceChildren(
      ...rows.map((r) => {
        const tr = el("tr");
        tr.dataset.group = r.group;
        tr.append(
          el("td", "route", r.group === "route" ? r.route : names[r.group]),
          el("td", "num requests", r.requests),
          el("td", "num median", r.median_statements),
          el("td", "num max", r.max_statements)
        );
        return tr;
      })
    );
  }

  function status(text, failed) {
    const s = byId("status");
    s.textContent = text;
    s.classList.toggle("error", failed);
  }

  async function poll() {
    try {
      const response = await fetch("/api/live", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      renderCoverage(data);
      renderFindings(data);
      renderFingerprints(data.fingerprints);
      renderRoutes(data.routes);
      status("updated " + new Date(data.generated_at_ms).toLocaleTimeString(), false);
    } catch (e) {
      status("cannot reach the proxy (" + e.message + "); retrying", true);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  for (const select of Object.values(filters)) select.addEventListener("change", applyFilters);
  poll();
})();
