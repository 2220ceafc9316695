// The dashboard: the queue's numbers from GET /v1/review/stats, and decisions per hour as a small SVG bar chart
// drawn here (no chart library). Refreshes every 30 s and on the Refresh button.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const { api, clear, say, fmtRate, fmtAge } = finesieve;
  const SVG = "http://www.w3.org/2000/svg";
  const REFRESH_MS = 30000;

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  }

  // One bar per hour; the tallest is the full height. Labels every 6 hours keep it readable at 375 px.
  function drawChart(perHour) {
    const box = $("chart");
    clear(box);
    const width = 360, height = 140, bottom = 16, top = 14; // user units; the SVG scales to its box
    const most = Math.max(1, ...perHour.map((h) => h.decisions));
    const slot = width / Math.max(1, perHour.length);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "chart-title" });
    perHour.forEach((h, i) => {
      const barHeight = ((height - bottom - top) * h.decisions) / most;
      const bar = svg("rect", {
        class: "bar", x: i * slot + 1, y: height - bottom - barHeight, width: Math.max(1, slot - 2), height: barHeight,
        "data-hour": h.hour, "data-decisions": h.decisions,
      });
      const title = svg("title", {});
      title.textContent = `${h.hour.slice(11, 16)} UTC: ${h.decisions} decisions`;
      bar.appendChild(title);
      chart.appendChild(bar);
      if (h.decisions > 0) {
        const count = svg("text", { x: i * slot + slot / 2, y: height - bottom - barHeight - 2, "text-anchor": "middle" });
        count.textContent = String(h.decisions);
        chart.appendChild(count);
      }
      if (i % 6 === 0) {
        const label = svg("text", { x: i * slot + 1, y: height - 4 });
        label.textContent = h.hour.slice(11, 16);
        chart.appendChild(label);
      }
    });
    box.appendChild(chart);
    const total = perHour.reduce((sum, h) => sum + h.decisions, 0);
    const busiest = Math.max(0, ...perHour.map((h) => h.decisions));
    $("chart-summary").textContent = `${total} decisions in the last ${perHour.length} hours; busiest hour: ${busiest}.`;
  }

  function show(stats) {
    $("stat-pending").textContent = String(stats.pending);
    $("stat-leased").textContent = String(stats.leased);
    $("stat-decided").textContent = String(stats.decided);
    for (const reason of ["flagged", "audit", "failure"]) {
      $(`stat-reason-${reason}`).textContent = String((stats.by_reason || {})[reason] || 0);
    }
    $("stat-oldest").textContent = stats.oldest_pending_age_s === null ? "none" : fmtAge(stats.oldest_pending_age_s);
    $("stat-precision").textContent = fmtRate(stats.queue_precision);
    $("stat-overturn").textContent = fmtRate(stats.overturn_rate);
    $("stat-audit-rate").textContent = fmtRate(stats.audit_violation_rate);
    $("stat-mean-time").textContent = fmtAge(stats.mean_seconds_to_decision);
    $("stat-last-hour").textContent = String(stats.decisions_last_hour);
    drawChart(stats.decisions_per_hour || []);
  }

  async function refresh() {
    try {
      show(await api("GET", "/v1/review/stats"));
      say(`Updated ${new Date().toLocaleTimeString()}.`);
      document.body.dataset.ready = "true";
    } catch (err) {
      if (err.status === 401) window.location.assign("/ui/login?next=/ui/dashboard");
      else say(`Could not load the numbers: ${err.message}`, true);
    }
  }

  async function start() {
    finesieve.showUser(await finesieve.requireUser());
    $("refresh").addEventListener("click", refresh);
    await refresh();
    window.setInterval(refresh, REFRESH_MS);
  }

  start().catch((err) => say(`Could not start: ${err.message}`, true));
})();
