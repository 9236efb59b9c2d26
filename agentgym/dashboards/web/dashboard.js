"use strict";
// Draws the report JSON (`agentgym report --format json`) with plotly.js, and nothing else: every
// number on the page is one the report gives. Served by the proxy, it polls `admin/report` with
// the filters kept in the page's URL; in an HTML report the report is embedded and drawn once.
(function () {
  const embedded = window.AGENTGYM_REPORT;
  const form = document.getElementById("filters");
  const statusLine = document.getElementById("status");
  const PLOT_CONFIG = { displaylogo: false, responsive: true };
  const RATE_AXIS = { tickformat: ".0%", range: [0, 1.05], rangemode: "tozero" };
  const NAMES = { policy: (v) => v ?? "none", arm: (v) => v, tool: (v) => v };

  // ---- formatting
  const pct = (v) => (v == null ? "–" : (100 * v).toFixed(1) + "%");
  const num = (v, digits = 1) => (v == null ? "–" : v.toLocaleString("en", { maximumFractionDigits: digits }));
  const usd = (v, digits = 4) => (v == null ? "–" : "$" + v.toFixed(digits));
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  // Plotly's date axes take local wall-clock strings; the report's times are ISO with a zone.
  function local(date) {
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  }
  const when = (iso) => local(new Date(iso.replace(/(\.\d{3})\d+/, "$1"))); // Date reads no finer than ms
  const epoch = (seconds) => local(new Date(seconds * 1000)).slice(0, 19);

  // An element with text children only (error messages and reasons come from the traffic: never HTML).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    for (const child of children.flat()) node.append(child instanceof Node ? child : String(child ?? ""));
    return node;
  }

  // ---- charts
  // One colour per name (a tool, a version, an arm) on every chart and at every refresh.
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const colours = new Map();
  const colour = (name) => {
    if (!colours.has(name)) colours.set(name, PALETTE[colours.size % PALETTE.length]);
    return colours.get(name);
  };

  function draw(id, traces, yaxis, extra) {
    const div = document.getElementById(id);
    const layout = {
      title: { text: div.dataset.title, font: { size: 14 } }, margin: { l: 60, r: 20, t: 40, b: 40 },
      legend: { orientation: "h", y: -0.15 }, xaxis: { type: "date" }, yaxis: { rangemode: "tozero", ...yaxis },
      hovermode: "x unified", ...extra,
    };
    if (!traces.some((t) => t.x.length)) {
      layout.annotations = [{ text: "nothing in this range yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
      layout.xaxis = { visible: false };
    }
    Plotly.react(div, traces, layout, PLOT_CONFIG);
  }

  function timelineCharts(report) {
    const windows = report.timeline;
    const x = windows.map((w) => when(w.last_episode_at));
    const line = (name, y) => ({ type: "scatter", mode: "lines+markers", name, x, y,
      marker: { color: colour(name) }, line: { color: colour(name) } });
    const series = (key, name) => line(name, windows.map((w) => w[key]));
    const split = (by) => {
      const byName = new Map();
      for (const row of report.timeline_by.filter((r) => r.by === by)) {
        const name = NAMES[by](row.name);
        if (!byName.has(name)) byName.set(name, windows.map(() => null));
        byName.get(name)[row.window] = row.tool_success_rate;
      }
      return [...byName].map(([name, y]) => line(name, y));
    };
    draw("chart-tool-success", [series("tool_success_rate", "all tools"), ...split("tool")], RATE_AXIS);
    draw("chart-tool-success-policy", split("policy"), RATE_AXIS);
    draw("chart-tool-success-arm", split("arm"), RATE_AXIS);
    draw("chart-episode-success", [series("episode_success_rate", "episodes")], RATE_AXIS);
    draw("chart-tokens", [series("prompt_tokens_per_request", "prompt"),
                          series("completion_tokens_per_request", "completion")]);
    draw("chart-cost-request", [series("cost_usd_per_request", "per request")], { tickformat: "$.2~g" });
    draw("chart-cost-episode", [series("cost_per_successful_episode", "per successful episode")], { tickformat: "$.2~g" });
    draw("chart-latency", [series("latency_ms_p50", "p50"), series("latency_ms_p95", "p95"),
                           series("latency_ms_p99", "p99")]);
  }

  function failingTools(report) {
    const failing = report.by_tool.filter((t) => t.error > 0).sort((a, b) => b.error - a.error || a.tool.localeCompare(b.tool));
    const top = failing.slice(0, 10).reverse(); // plotly draws the first bar at the bottom
    draw("chart-failing-tools", [{
      type: "bar", orientation: "h", name: "errors", y: top.map((t) => t.tool), x: top.map((t) => t.error),
      hovertext: top.map((t) => (t.top_errors[0] ? `${t.top_errors[0].message} (${t.top_errors[0].count})` : "")),
    }], { type: "category", automargin: true }, { xaxis: { rangemode: "tozero" }, hovermode: "closest" });
    const body = document.querySelector("#failing-tools tbody");
    body.replaceChildren(...failing.map((t) => el("tr", { "data-tool": t.tool },
      el("td", {}, t.tool), el("td", { class: "num" }, num(t.calls, 0)), el("td", { class: "num" }, num(t.error, 0)),
      el("td", { class: "num" }, pct(t.error_rate)),
      el("td", {}, el("ul", {}, t.top_errors.map((e) => el("li", {}, `${e.message} (${e.count})`)))))));
    if (!failing.length) body.append(el("tr", {}, el("td", { colspan: 5 }, "no failed tool calls in this range")));
  }

  function policies(report) {
    const rows = report.by_policy;
    const x = rows.map((r) => `${NAMES.policy(r.version)} · ${r.arm}`);
    draw("chart-by-policy", [
      { type: "bar", name: "tool success", x, y: rows.map((r) => r.tool_success_rate) },
      { type: "bar", name: "episode success", x, y: rows.map((r) => r.episode_success_rate) },
    ], RATE_AXIS, { xaxis: { type: "category" }, barmode: "group", hovermode: "closest" });

    const gate = (g) => (g && g.method ? `${g.method}: ${num(g.new, 4)} vs ${num(g.current, 4)}, difference ` +
      `${num(g.difference, 4)}, 95% CI [${(g.ci95 || []).map((v) => num(v, 4)).join(", ")}], ` +
      `${g.passed ? "passed" : "failed"}` : "–");
    const history = (h) => el("details", {}, el("summary", {}, `${h.length} change${h.length === 1 ? "" : "s"}`),
      el("ul", {}, h.map((c) => el("li", {}, `${epoch(c.at)} ${c.from} → ${c.to} by ${c.by}: ${c.reason}`))));
    document.querySelector("#policies tbody").replaceChildren(...[...report.policies].reverse().map((v) =>
      el("tr", { "data-version": v.version },
        el("td", {}, v.version), el("td", { class: `status-${v.status}` }, v.status),
        el("td", { class: "num" }, `${num(v.traffic_pct)}%`), el("td", {}, epoch(v.created_at)), el("td", {}, v.engine),
        el("td", {}, gate(v.gate)), el("td", {}, history(v.history)))));

    const r = report.rollout;
    const trial = (kind, t, line) => [el("h3", {}, `${kind}: ${t ? t.version : "none"}`),
      ...(t ? [el("p", {}, line), el("ul", { class: `analysis-${kind}` }, t.analysis.map((a) => el("li", {}, a)))] : [])];
    document.getElementById("rollout").replaceChildren(
      el("h3", {}, `live: ${r.live ?? "none (requests pass unplanned)"}, ${num(r.live_percent)}% of episodes` +
        (r.control_percent ? `; control (no policy): ${num(r.control_percent)}%` : "")),
      ...trial("canary", r.canary, r.canary && `${num(r.canary.percent)}% of episodes since ` +
        `${epoch(r.canary.started_at)}, this step since ${epoch(r.canary.step_started_at)}` +
        (r.canary.paused ? `; paused: ${r.canary.paused}` : "")),
      ...trial("shadow", r.shadow, r.shadow && `scoring every request since ${epoch(r.shadow.started_at)}`),
      ...(report.reward_model ? [el("p", { id: "reward-model" }, rewardModel(report.reward_model))] : []));
  }

  function rewardModel(m) {
    const h = m.held_out;
    return `reward model (LLM versions' gate; ${m.target} outcomes, fitted ${epoch(m.fitted_at)} by ${m.by} on ` +
      `${num(m.train_examples, 0)} calls): held out ${num(h.examples, 0)} calls of ${num(h.episodes, 0)} episodes, ` +
      `accuracy ${pct(h.accuracy)} (majority ${pct(h.majority_accuracy)}), AUC ${num(h.auc, 3)}`;
  }

  function tiles(report) {
    const { tool_calls: calls, episodes, tokens, requests, latency_ms: latency } = report;
    const tile = (label, key, value, shown) =>
      el("div", { class: "tile", "data-key": key, "data-value": JSON.stringify(value) },
        el("div", { class: "label" }, label), el("div", { class: "value" }, shown));
    document.getElementById("kpis").replaceChildren(
      tile("tool-call success", "tool_calls.success_rate", calls.success_rate, pct(calls.success_rate)),
      tile(`tool calls (${num(calls.error, 0)} failed)`, "tool_calls.total", calls.total, num(calls.total, 0)),
      tile("episode success", "episodes.success_rate", episodes.success_rate, pct(episodes.success_rate)),
      tile(`episodes (${num(episodes.finished, 0)} finished)`, "episodes.total", episodes.total, num(episodes.total, 0)),
      tile(`requests (${num(requests.errors, 0)} errors)`, "requests.total", requests.total, num(requests.total, 0)),
      tile("prompt tokens / request", "tokens.prompt_per_request", tokens.prompt_per_request, num(tokens.prompt_per_request)),
      tile("completion tokens / request", "tokens.completion_per_request", tokens.completion_per_request,
           num(tokens.completion_per_request)),
      tile("cost, total", "tokens.cost_usd_total", tokens.cost_usd_total, usd(tokens.cost_usd_total)),
      tile("cost / request", "tokens.cost_usd_per_request", tokens.cost_usd_per_request, usd(tokens.cost_usd_per_request, 6)),
      tile("cost / successful episode", "tokens.cost_per_successful_episode", tokens.cost_per_successful_episode,
           usd(tokens.cost_per_successful_episode)),
      ...["p50", "p95", "p99"].map((p) => tile(`latency ${p}`, `latency_ms.${p}`, latency[p], `${num(latency[p], 0)} ms`)));
  }

  function render(report) {
    tiles(report);
    timelineCharts(report);
    failingTools(report);
    policies(report);
    document.body.dataset.generatedAt = report.generated_at;
  }

  // ---- the served dashboard: filters in the URL, polling
  function options(select, values) {
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "all"), ...values.map((v) => el("option", { value: v }, v)));
    if (chosen && !values.includes(chosen)) select.append(el("option", { value: chosen }, chosen));
    select.value = chosen;
  }

  const AGES = { m: 60e3, h: 3600e3, d: 86400e3 };
  function reportQuery() {
    const f = new FormData(form), query = new URLSearchParams({ window: f.get("window") });
    const range = f.get("range");
    if (range === "custom") {
      for (const name of ["since", "until"]) if (f.get(name)) query.set(name, new Date(f.get(name)).toISOString());
    } else if (range) {
      query.set("since", new Date(Date.now() - parseInt(range, 10) * AGES[range.slice(-1)]).toISOString());
    }
    for (const name of ["model", "scenario"]) if (f.get(name)) query.set(name, f.get(name));
    return query;
  }

  let timer = null, latest = 0;
  async function refresh() {
    clearTimeout(timer);
    const asked = ++latest;
    try {
      const response = await fetch("admin/report?" + reportQuery(), { cache: "no-store" });
      const body = await response.json().catch(() => null);
      if (!response.ok) throw new Error(body?.error?.message || `the proxy answered ${response.status}`);
      if (asked !== latest) return; // the filters changed while this was on its way
      options(form.elements.model, body.filter_values.models);
      options(form.elements.scenario, body.filter_values.scenarios);
      render(body);
      statusLine.className = "";
      statusLine.textContent = `updated ${local(new Date()).slice(11, 19)}`;
    } catch (error) {
      statusLine.className = "error";
      statusLine.textContent = `could not load the report: ${error.message}`;
    }
    const every = Number(form.elements.refresh.value);
    if (asked === latest && every > 0) timer = setTimeout(refresh, every * 1000);
  }

  function fromUrl() {
    const params = new URLSearchParams(location.search);
    for (const [name, value] of params) {
      const field = form.elements[name];
      if (!field) continue;
      // a value the list lacks (?window=5, a model not loaded yet) is added to it
      if (field.tagName === "SELECT" && ![...field.options].some((o) => o.value === value)) {
        field.append(el("option", { value }, value));
      }
      field.value = value;
    }
    if (!params.has("refresh")) form.elements.refresh.value = "15";
    form.classList.toggle("custom", form.elements.range.value === "custom");
  }

  function onChange() {
    form.classList.toggle("custom", form.elements.range.value === "custom");
    const kept = new URLSearchParams([...new FormData(form)].filter(([, v]) => v !== ""));
    history.replaceState(null, "", "?" + kept);
    refresh();
  }

  if (embedded) {
    const s = embedded.scope;
    form.replaceChildren(el("span", {}, `report of ${when(embedded.generated_at).slice(0, 19)}` +
      `${s.since ? `, since ${s.since}` : ""}${s.until ? `, until ${s.until}` : ""}` +
      `${s.model ? `, model ${s.model}` : ""}${s.scenario ? `, scenario ${s.scenario}` : ""}, windows of ${s.window} episodes`));
    render(embedded);
  } else {
    fromUrl();
    form.addEventListener("change", onChange);
    refresh();
  }
})();
