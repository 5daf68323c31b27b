/**
 * The live page at `GET /_cache/`: an HTML page and its script, with no figure and no path in
 * either. The script asks for the admin token once (kept in `sessionStorage`), then polls
 * `/_cache/stats` and `/_cache/metrics` with it every 2 seconds and shows:
 *
 * - gets per second by outcome and the hit ratio over the last 10 minutes, as a uPlot chart
 *   (the library is served by the server, see `MetricsRoutes`), and the totals;
 * - transpile time percentiles (from `module_cache_transpile_seconds`), the worker pool's
 *   queue and busy workers, the Postgres connections, L1's fill;
 * - per realm: modules, L2 bytes and errors; the last transpile errors as `path:line:column`.
 *
 * @since 0.5.0
 */

/** The page. */
export const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>module-transpile-cache</title>
<link rel="stylesheet" href="uplot.css">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em; color: #222; }
  h1 { font-size: 1.3em; margin: 0; }
  h2 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
  header { display: flex; justify-content: space-between; align-items: baseline; border-bottom: 1px solid #ddd; padding-bottom: 0.4em; }
  #status { color: #666; }
  .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: 0.5em 2em; }
  table { border-collapse: collapse; }
  td, th { padding: 2px 10px 2px 0; text-align: left; }
  td.n { text-align: right; font-variant-numeric: tabular-nums; }
  #errors li { font-family: ui-monospace, monospace; }
  .muted { color: #777; }
</style>
</head>
<body>
<header><h1>module-transpile-cache</h1><span id="status"></span></header>
<form id="login" hidden>
  <h2>Admin token</h2>
  <p>This page reads the server's statistics and metrics with the admin token. It is kept in this tab only (sessionStorage).</p>
  <input id="token" type="password" autocomplete="off" size="40" aria-label="admin token">
  <button type="submit">Open</button>
  <p id="login-message" class="muted"></p>
</form>
<main id="live" hidden>
  <h2>Gets per second by outcome, and hit ratio (last 10 minutes)</h2>
  <div id="chart"></div>
  <div class="grid">
    <section>
      <h2>Gets</h2>
      <table id="gets"><thead><tr><th>outcome</th><th>total</th><th>per second</th></tr></thead><tbody></tbody></table>
      <p>Hit ratio (L1 and L2 hits): <span id="hit-ratio"></span></p>
    </section>
    <section>
      <h2>Transpiles</h2>
      <table>
        <tr><td>run here</td><td class="n" id="transpiles"></td></tr>
        <tr><td>p50</td><td class="n" id="transpile-p50"></td></tr>
        <tr><td>p90</td><td class="n" id="transpile-p90"></td></tr>
        <tr><td>p99</td><td class="n" id="transpile-p99"></td></tr>
        <tr><td>workers busy</td><td class="n" id="busy"></td></tr>
        <tr><td>jobs queued</td><td class="n" id="queue"></td></tr>
        <tr><td>loads in flight</td><td class="n" id="in-flight"></td></tr>
      </table>
    </section>
    <section>
      <h2>Memory</h2>
      <table>
        <tr><td>L1 fill</td><td class="n" id="l1-fill"></td></tr>
        <tr><td>L1 modules</td><td class="n" id="l1-entries"></td></tr>
        <tr><td>raw files</td><td class="n" id="raw-bytes"></td></tr>
      </table>
      <h2>Fleet connections</h2>
      <p id="connections"></p>
    </section>
  </div>
  <h2>Realms</h2>
  <table id="realms"><thead><tr><th>mount</th><th>realm</th><th>modules</th><th>L2 bytes</th><th>errors</th></tr></thead><tbody></tbody></table>
  <h2>Last transpile errors</h2>
  <ul id="errors"></ul>
</main>
<script src="uplot.js"></script>
<script src="live.js"></script>
</body>
</html>
`

/** The page's script (plain browser JavaScript). */
export const script = `"use strict";
(() => {
  const tokenKey = "module-transpile-cache/admin-token";
  const samplesKey = "module-transpile-cache/samples";
  const pollMillis = 2000;
  const windowSeconds = 600;
  const outcomes = ["l1", "l2", "transpiled", "coalesced", "fallback", "error"];
  const colors = { l1: "#2b8a3e", l2: "#1971c2", transpiled: "#e8590c", coalesced: "#9c36b5", fallback: "#c92a2a", error: "#212529" };
  const $ = (id) => document.getElementById(id);
  // The samples of this tab survive a reload (not the token's refusal): a chart keeps its minutes.
  const samples = (() => {
    try {
      const kept = JSON.parse(sessionStorage.getItem(samplesKey) || "[]");
      return Array.isArray(kept) ? kept : [];
    } catch {
      return [];
    }
  })();
  let chart;
  let timer;

  const unescape = (value) => value.replace(/\\\\(["\\\\n])/g, (_, c) => (c === "n" ? "\\n" : c));
  const parse = (text) => {
    const out = [];
    for (const line of text.split("\\n")) {
      if (line === "" || line.startsWith("#")) continue;
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\\{(.*)\\})? (\\S+)$/.exec(line);
      if (match === null) continue;
      const labels = {};
      for (const label of (match[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\\]|\\\\.)*)"/g)) labels[label[1]] = unescape(label[2]);
      out.push({ name: match[1], labels, value: Number(match[3]) });
    }
    return out;
  };
  const total = (metrics, name, where) =>
    metrics.filter((s) => s.name === name && (where === undefined || where(s.labels))).reduce((a, s) => a + s.value, 0);
  const quantile = (metrics, name, q) => {
    const byBound = new Map();
    for (const s of metrics) {
      if (s.name !== name + "_bucket") continue;
      const bound = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
      byBound.set(bound, (byBound.get(bound) || 0) + s.value);
    }
    const count = byBound.get(Infinity) || 0;
    if (count === 0) return undefined;
    const rank = q * count;
    let lower = 0;
    let below = 0;
    for (const bound of [...byBound.keys()].sort((a, b) => a - b)) {
      const cumulated = byBound.get(bound);
      if (cumulated >= rank) {
        if (bound === Infinity) return lower;
        return lower + (bound - lower) * ((rank - below) / Math.max(cumulated - below, 1));
      }
      lower = bound;
      below = cumulated;
    }
    return lower;
  };
  const seconds = (value) => value === undefined ? "none yet" : value < 1 ? (value * 1000).toFixed(1) + " ms" : value.toFixed(2) + " s";
  const bytes = (n) => n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB";
  const setText = (id, text) => { $(id).textContent = text; };
  const cell = (row, text, numeric) => { const td = row.insertCell(); td.textContent = text; if (numeric) td.className = "n"; return td; };

  const login = (message) => {
    clearTimeout(timer);
    $("live").hidden = true;
    $("login").hidden = false;
    setText("login-message", message || "");
    setText("status", "");
    $("token").focus();
  };

  const fetchWith = async (token, path) => {
    const response = await fetch(path, { headers: { authorization: "Bearer " + token }, cache: "no-store" });
    if (response.status === 401 || response.status === 403) throw Object.assign(new Error("refused"), { refused: true });
    if (!response.ok) throw new Error(path + ": " + response.status);
    return response;
  };

  const render = (stats, metrics) => {
    const now = Date.now() / 1000;
    const counts = {};
    for (const outcome of outcomes) counts[outcome] = total(metrics, "module_cache_gets_total", (l) => l.outcome === outcome);
    // A counter that went down: the server restarted, and the samples before are of another process.
    const last = samples[samples.length - 1];
    if (last !== undefined && outcomes.some((o) => counts[o] < last.counts[o])) samples.length = 0;
    samples.push({ t: now, counts });
    while (samples.length > 2 && samples[0].t < now - windowSeconds) samples.shift();
    sessionStorage.setItem(samplesKey, JSON.stringify(samples));

    const previous = samples.length > 1 ? samples[samples.length - 2] : undefined;
    const tbody = $("gets").tBodies[0];
    tbody.replaceChildren();
    for (const outcome of outcomes) {
      const row = tbody.insertRow();
      cell(row, outcome);
      cell(row, String(counts[outcome]), true).id = "gets-" + outcome;
      const rate = previous === undefined ? 0 : (counts[outcome] - previous.counts[outcome]) / Math.max(now - previous.t, 0.001);
      cell(row, rate.toFixed(1), true);
    }
    const first = samples[0];
    const all = (c) => outcomes.reduce((a, o) => a + c[o], 0);
    const hits = (c) => c.l1 + c.l2;
    const span = samples.length > 1 ? all(counts) - all(first.counts) : all(counts);
    const spanHits = samples.length > 1 ? hits(counts) - hits(first.counts) : hits(counts);
    const ever = all(counts);
    setText("hit-ratio", span > 0
      ? (100 * spanHits / span).toFixed(1) + " % (last " + Math.max(1, Math.round((now - first.t) / 60)) + " min)"
      : ever > 0
      ? (100 * hits(counts) / ever).toFixed(1) + " % (since the server started)"
      : "no gets yet");

    setText("transpiles", String(stats.transpiles));
    for (const q of [50, 90, 99]) setText("transpile-p" + q, seconds(quantile(metrics, "module_cache_transpile_seconds", q / 100)));
    setText("busy", String(total(metrics, "transpile_pool_busy_workers")));
    setText("queue", String(total(metrics, "transpile_pool_queue_length")));
    setText("in-flight", String(stats.inFlight));
    const max = stats.l1MaxBytes || 0;
    setText("l1-fill", bytes(stats.l1Bytes) + (max > 0 ? " of " + bytes(max) + " (" + (100 * stats.l1Bytes / max).toFixed(1) + " %)" : ""));
    setText("l1-entries", String(stats.l1Entries));
    setText("raw-bytes", bytes(stats.rawFileBytes || 0));
    const c = stats.connections;
    setText("connections", c === undefined
      ? "no Postgres (" + stats.store + " store)"
      : "this process: " + c.open + " of a budget of " + c.budget + "; the server: " + c.serverOpen + " of " + c.serverMax +
        (c.fleetSize === undefined ? "" : "; fleet size " + c.fleetSize) + "; refusals " + c.refusals);

    const realms = $("realms").tBodies[0];
    realms.replaceChildren();
    for (const realm of Object.values(stats.realms || {})) {
      const row = realms.insertRow();
      cell(row, realm.mount + (realm.private ? " (private)" : ""));
      cell(row, realm.realmUrl);
      cell(row, String(realm.modules), true);
      cell(row, realm.l2Bytes === undefined ? "n/a" : bytes(realm.l2Bytes), true);
      cell(row, String(realm.errors), true);
    }
    const errors = $("errors");
    errors.replaceChildren();
    const recent = (stats.recentErrors || []).slice().reverse();
    if (recent.length === 0) { const li = document.createElement("li"); li.className = "muted"; li.textContent = "none"; errors.append(li); }
    for (const error of recent) {
      const li = document.createElement("li");
      li.textContent = error.path + ":" + (error.line ?? "?") + ":" + (error.column ?? "?") + " " + error.kind + ": " + error.message.split("\\n")[0];
      errors.append(li);
    }
    drawChart();
    setText("status", "updated " + new Date().toLocaleTimeString());
  };

  const drawChart = () => {
    if (samples.length < 2 || typeof uPlot !== "function") return;
    const xs = [];
    const rates = outcomes.map(() => []);
    const ratio = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1];
      const b = samples[i];
      const dt = Math.max(b.t - a.t, 0.001);
      xs.push(b.t);
      let sum = 0;
      outcomes.forEach((o, k) => { const r = (b.counts[o] - a.counts[o]) / dt; rates[k].push(r); sum += r; });
      ratio.push(sum > 0 ? 100 * ((b.counts.l1 - a.counts.l1) + (b.counts.l2 - a.counts.l2)) / (sum * dt) : null);
    }
    const data = [xs, ...rates, ratio];
    if (chart === undefined) {
      const width = Math.max($("chart").clientWidth, 320);
      chart = new uPlot({
        width,
        height: 280,
        scales: { x: { time: true }, ratio: { range: [0, 100] } },
        axes: [{}, { label: "gets/s" }, { side: 1, scale: "ratio", label: "hit ratio %", grid: { show: false } }],
        series: [
          {},
          ...outcomes.map((o) => ({ label: o, stroke: colors[o], width: 1.5 })),
          { label: "hit ratio %", scale: "ratio", stroke: "#868e96", dash: [6, 4], width: 1.5 }
        ]
      }, data, $("chart"));
    } else {
      chart.setData(data);
    }
  };

  const poll = async () => {
    clearTimeout(timer);
    const token = sessionStorage.getItem(tokenKey);
    if (token === null) return login();
    try {
      const [stats, metrics] = await Promise.all([
        fetchWith(token, "stats").then((r) => r.json()),
        fetchWith(token, "metrics").then((r) => r.text())
      ]);
      $("login").hidden = true;
      $("live").hidden = false;
      render(stats, parse(metrics));
    } catch (error) {
      if (error.refused) {
        sessionStorage.removeItem(tokenKey);
        sessionStorage.removeItem(samplesKey);
        samples.length = 0;
        return login("The server refused that token.");
      }
      setText("status", "cannot reach the server: " + error.message);
    }
    timer = setTimeout(poll, pollMillis);
  };

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (value === "") return;
    sessionStorage.setItem(tokenKey, value);
    $("token").value = "";
    poll();
  });
  poll();
})();
`
