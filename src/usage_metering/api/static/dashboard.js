// Usage Metering dashboard: plain JS over the JSON API, no build step, no dependencies.
// Numbers are shown exactly as the API returns them (decimal strings); floats are
// only used for bar lengths. <body data-state> is "starting", "auth", "loading",
// "ready" or "error"; data-tenant / data-metric say what is on screen.
"use strict";

const KEY_STORAGE = "usage_metering_api_key";
const SVG_NS = "http://www.w3.org/2000/svg";
const DAY_MS = 86400000;

const $ = (id) => document.getElementById(id);
let tenants = [];
let units = {};          // metric name -> unit, from /api/metrics
let tenantMetrics = [];  // metrics shown for the current tenant
let generation = 0;      // discards answers to requests that a newer choice replaced

class AuthRequired extends Error {}
class ApiFailure extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

function setState(state) {
  document.body.dataset.state = state;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  if (response.status === 401) throw new AuthRequired("the API needs a key");
  let data = null;
  try {
    data = await response.json();
  } catch (_e) {
    data = null;
  }
  if (!response.ok) {
    const message = data && data.error && data.error.message ? data.error.message : response.statusText;
    throw new ApiFailure(method + " " + path + ": " + response.status + " " + message, response.status);
  }
  return data;
}

const enc = encodeURIComponent;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (name === "className") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function forbiddenAs(fallback) {
  return (error) => {
    if (error instanceof ApiFailure && error.status === 403) return fallback;
    throw error;
  };
}

function showError(error) {
  if (error instanceof AuthRequired) {
    showAuth();
    return;
  }
  $("error").textContent = String(error.message || error);
  $("error").hidden = false;
  setState("error");
}

function showAuth() {
  $("auth-form").hidden = false;
  $("content").hidden = true;
  $("forget-key").hidden = !sessionStorage.getItem(KEY_STORAGE);
  $("api-key").focus();
  setState("auth");
}

// -- tenants ------------------------------------------------------------------------

async function loadTenants() {
  setState("loading");
  $("error").hidden = true;
  // A tenant-scoped key may not list tenants or metrics (403): its own billing
  // report names its tenant, and units are only a nicety.
  const [tenantList, metricList] = await Promise.all([
    api("GET", "/api/tenants").catch(forbiddenAs(null)),
    api("GET", "/api/metrics").catch(forbiddenAs({ metrics: [] })),
  ]);
  if (tenantList) {
    tenants = tenantList.tenants;
  } else {
    const own = (await api("POST", "/api/billing-report", {})).invoices[0];
    tenants = own ? [{ tenant_id: own.tenant_id, name: own.tenant_id, plan_id: own.plan_id }] : [];
  }
  units = {};
  for (const metric of metricList.metrics) units[metric.name] = metric.unit || "";
  const select = $("tenant-select");
  let previous = select.value || new URLSearchParams(location.search).get("tenant") || "";
  if (!tenantList && tenants.length === 1) previous = tenants[0].tenant_id;
  select.replaceChildren(el("option", { value: "" }, "choose a tenant…"));
  for (const tenant of tenants) {
    select.append(el("option", { value: tenant.tenant_id }, tenant.name + " (" + tenant.tenant_id + ")"));
  }
  select.disabled = false;
  $("auth-form").hidden = true;
  $("forget-key").hidden = !sessionStorage.getItem(KEY_STORAGE);
  if (previous && tenants.some((t) => t.tenant_id === previous)) {
    select.value = previous;
    await loadTenant(previous);
  } else {
    setState("ready");
  }
}

async function loadTenant(tenantId) {
  const mine = ++generation;
  $("error").hidden = true;
  if (!tenantId) {
    $("content").hidden = true;
    delete document.body.dataset.tenant;
    setState("ready");
    return;
  }
  setState("loading");
  const [usage, billing] = await Promise.all([
    api("GET", "/api/usage/" + enc(tenantId)),
    api("POST", "/api/billing-report", { tenant_id: tenantId }),
  ]);
  // The plan's metrics are the invoice's line items (readable with a tenant key, unlike /api/plans).
  const invoice = billing.invoices[0] || null;
  const names = [];
  for (const m of invoice ? invoice.line_items : []) if (!names.includes(m.metric)) names.push(m.metric);
  for (const m of usage.metrics) if (!names.includes(m.metric)) names.push(m.metric);
  const quotas = await Promise.all(names.map((name) => api("GET", "/api/quota/" + enc(tenantId) + "/" + enc(name))));
  if (mine !== generation) return;

  tenantMetrics = names;
  $("period").textContent = "period " + usage.period.start + " → " + usage.period.end;
  renderQuotas(quotas);
  renderBilling(invoice);

  const metricSelect = $("metric-select");
  const current = metricSelect.value;
  metricSelect.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
  const used = usage.metrics.map((m) => m.metric);
  metricSelect.value = names.includes(current) ? current : used[0] || names[0] || "";
  document.body.dataset.tenant = tenantId;
  $("content").hidden = false;
  await loadMetric(tenantId, metricSelect.value, mine);
}

// -- one metric: daily chart and top users -------------------------------------------------

async function loadMetric(tenantId, metric, mine) {
  if (!metric) {
    renderDaily(null);
    renderTopUsers(null);
    document.body.dataset.metric = "";
    setState("ready");
    return;
  }
  setState("loading");
  const [daily, top] = await Promise.all([
    api("GET", "/api/usage/" + enc(tenantId) + "/" + enc(metric) + "?daily=true"),
    api("GET", "/api/top-users/" + enc(tenantId) + "/" + enc(metric) + "?limit=10"),
  ]);
  if (mine !== generation) return;
  renderDaily(daily);
  renderTopUsers(top);
  document.body.dataset.metric = metric;
  setState("ready");
}

// -- rendering -------------------------------------------------------------------------------

function renderQuotas(quotas) {
  const box = $("quota-bars");
  box.replaceChildren();
  if (!quotas.length) box.append(el("p", { className: "muted" }, "No metrics in the plan and no usage yet."));
  for (const q of quotas) {
    const used = parseFloat(q.used);
    const limit = q.limit === null ? null : parseFloat(q.limit);
    let fraction = 0;
    if (limit === null) fraction = 0;
    else if (limit > 0) fraction = used / limit;
    else fraction = used > 0 ? 1 : 0;
    const level = limit === null ? "unlimited" : fraction >= 1 ? "over" : fraction >= 0.8 ? "near" : "ok";
    const fill = el("div", { className: "fill " + level });
    fill.style.width = (Math.min(fraction, 1) * 100).toFixed(2) + "%";
    const unit = units[q.metric] ? " " + units[q.metric] : "";
    const row = el(
      "div",
      {
        className: "quota-row",
        id: "quota-" + q.metric,
        "data-metric": q.metric,
        "data-used": q.used,
        "data-limit": q.limit === null ? "" : q.limit,
        "data-policy": q.policy || "",
        title: limit === null ? "no limit" : (fraction * 100).toFixed(2) + "% of the limit",
      },
      el("div", { className: "quota-name" }, q.metric, el("span", { className: "policy" }, q.policy || "not in plan")),
      el("div", { className: "bar" }, fill),
      el(
        "div",
        { className: "quota-text" },
        el("span", { className: "used" }, q.used),
        " / ",
        el("span", { className: "limit" }, q.limit === null ? "unlimited" : q.limit),
        unit,
      ),
    );
    box.append(row);
  }
}

function renderDaily(summary) {
  const chart = $("daily-chart");
  chart.replaceChildren();
  if (!summary) {
    $("daily-total").textContent = "";
    $("daily-aggregation").textContent = "";
    $("daily-count").textContent = "0";
    chart.dataset.points = "0";
    return;
  }
  const points = summary.daily || [];
  $("daily-total").textContent = summary.value;
  $("daily-aggregation").textContent = "(" + summary.aggregation + ")";
  $("daily-count").textContent = String(points.length);
  chart.dataset.points = String(points.length);
  chart.dataset.metric = summary.metric;

  const start = Date.parse(summary.period.start);
  const days = Math.max(1, Math.round((Date.parse(summary.period.end) - start) / DAY_MS));
  const width = 760, height = 220, left = 56, right = 12, top = 14, bottom = 30;
  const plotW = width - left - right, plotH = height - top - bottom;
  const slot = plotW / days;
  let max = 0, maxText = "0";
  for (const p of points) {
    const v = parseFloat(p.value);
    if (v > max) { max = v; maxText = p.value; }
  }
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "daily", "aria-label": "daily usage" });
  root.append(svg("line", { x1: left, y1: top + plotH, x2: left + plotW, y2: top + plotH, class: "axis" }));
  root.append(svg("line", { x1: left, y1: top, x2: left + plotW, y2: top, class: "grid" }));
  root.append(svg("text", { x: left - 6, y: top + 4, "text-anchor": "end", class: "label" }, maxText));
  root.append(svg("text", { x: left - 6, y: top + plotH + 4, "text-anchor": "end", class: "label" }, "0"));
  const lastDay = new Date(start + (days - 1) * DAY_MS).toISOString().slice(0, 10);
  root.append(svg("text", { x: left, y: height - 8, class: "label" }, new Date(start).toISOString().slice(0, 10)));
  root.append(svg("text", { x: left + plotW, y: height - 8, "text-anchor": "end", class: "label" }, lastDay));
  for (const p of points) {
    const index = Math.round((Date.parse(p.date + "T00:00:00Z") - start) / DAY_MS);
    const v = parseFloat(p.value);
    const h = max > 0 ? Math.max((v / max) * plotH, v > 0 ? 1 : 0) : 0;
    const bar = svg("rect", {
      x: (left + index * slot + slot * 0.15).toFixed(2),
      y: (top + plotH - h).toFixed(2),
      width: Math.max(slot * 0.7, 1).toFixed(2),
      height: h.toFixed(2),
      class: "day",
      "data-date": p.date,
      "data-value": p.value,
      "data-events": p.event_count,
    });
    bar.append(svg("title", {}, p.date + ": " + p.value + " (" + p.event_count + " events)"));
    root.append(bar);
  }
  if (!points.length) {
    root.append(svg("text", { x: left + plotW / 2, y: top + plotH / 2, "text-anchor": "middle", class: "label" },
      "no events in this period"));
  }
  chart.append(root);
}

function renderTopUsers(top) {
  const body = $("top-users").tBodies[0];
  body.replaceChildren();
  $("top-users-metric").textContent = top ? "(" + top.metric + ")" : "";
  const users = top ? top.users : [];
  for (const u of users) {
    body.append(
      el("tr", { "data-user": u.user_id, "data-value": u.value, "data-rank": u.rank },
        el("td", {}, String(u.rank)),
        el("td", { className: "user" }, u.user_id),
        el("td", { className: "num value" }, u.value),
        el("td", { className: "num" }, String(u.event_count))),
    );
  }
  $("top-users-empty").hidden = users.length > 0;
}

function renderBilling(invoice) {
  const body = $("billing-lines").tBodies[0];
  body.replaceChildren();
  const total = $("billing-total");
  if (!invoice) {
    total.textContent = "—";
    total.dataset.total = "";
    $("billing-currency").textContent = "";
    $("billing-period").textContent = "";
    $("billing-base-fee").textContent = "";
    return;
  }
  total.textContent = invoice.total;
  total.dataset.total = invoice.total;
  total.dataset.currency = invoice.currency;
  $("billing-currency").textContent = invoice.currency;
  $("billing-period").textContent = "(" + invoice.period.label + ", plan " + (invoice.plan_id || "none") + ")";
  $("billing-base-fee").textContent = invoice.base_fee + " " + invoice.currency;
  for (const item of invoice.line_items) {
    body.append(
      el("tr", { "data-metric": item.metric, "data-amount": item.amount },
        el("td", {}, item.metric),
        el("td", {}, item.policy),
        el("td", { className: "num" }, item.used),
        el("td", { className: "num" }, item.included === null ? "unlimited" : item.included),
        el("td", { className: "num" }, item.overage_quantity),
        el("td", { className: "num" }, item.amount)),
    );
  }
}

// -- wiring ----------------------------------------------------------------------------------

$("tenant-select").addEventListener("change", (event) => {
  const tenantId = event.target.value;
  const url = new URL(location.href);
  if (tenantId) url.searchParams.set("tenant", tenantId);
  else url.searchParams.delete("tenant");
  history.replaceState(null, "", url);
  loadTenant(tenantId).catch(showError);
});

$("metric-select").addEventListener("change", (event) => {
  const tenantId = $("tenant-select").value;
  loadMetric(tenantId, event.target.value, ++generation).catch(showError);
});

$("auth-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("api-key").value = "";
  loadTenants().catch(showError);
});

$("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  $("forget-key").hidden = true;
  loadTenants().catch(showError);
});

loadTenants().catch(showError);
