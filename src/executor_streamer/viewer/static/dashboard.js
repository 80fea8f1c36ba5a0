// The dashboard (docs/query.md, "Dashboards"): run outcomes, runs over time, the commands
// that fail most, action durations, the slowest runs and the configured widgets. Drawn as
// text and SVG built node by node: nothing from the hub is ever parsed as HTML.

const SVG = "http://www.w3.org/2000/svg";
const RANGES = {
  day: { label: "last 24 hours, by hour", hours: 24, bucket: "hour" },
  week: { label: "last 7 days, by day", hours: 24 * 7, bucket: "day" },
  month: { label: "last 30 days, by day", hours: 24 * 30, bucket: "day" },
};
const REFRESH_MS = 10_000;

/** An SVG element with attributes and children (text children become text nodes). */
function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

/** Bars for each bucket, one per series, with a title per bar and the axis ends in words. */
function barChart(label, buckets, series) {
  const width = 720;
  const height = 160;
  const top = Math.max(1, ...buckets.flatMap((bucket) => series.map((s) => bucket[s.key])));
  const slot = width / Math.max(buckets.length, 1);
  const bar = Math.max(1, (slot - 2) / series.length);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 20}`, role: "img", "aria-label": label, class: "chart" });
  chart.append(svg("title", {}, label));
  buckets.forEach((bucket, i) => {
    series.forEach((s, j) => {
      const value = bucket[s.key];
      const h = (value / top) * height;
      const rect = svg("rect", { x: i * slot + j * bar, y: height - h, width: bar, height: h, class: s.key });
      rect.append(svg("title", {}, `${bucket.start}: ${value} ${s.label}`));
      chart.append(rect);
    });
  });
  if (buckets.length) {
    chart.append(svg("text", { x: 0, y: height + 15 }, buckets[0].start.slice(0, 16).replace("T", " ")));
    chart.append(svg("text", { x: width, y: height + 15, "text-anchor": "end" }, buckets.at(-1).start.slice(0, 16).replace("T", " ")));
  }
  chart.append(svg("text", { x: width, y: 12, "text-anchor": "end" }, `max ${top}`));
  return chart;
}

function ms(value) {
  if (value === null || value === undefined) return "–";
  return value >= 1000 ? `${(value / 1000).toFixed(1)} s` : `${Math.round(value)} ms`;
}

export function dashboard({ main, title, client, el, showProblem }) {
  title.textContent = "dashboard";
  const range = el(
    "select",
    { id: "range", "aria-label": "Time range" },
    ...Object.entries(RANGES).map(([key, r]) => el("option", { value: key }, r.label)),
  );
  const body = el("div", { class: "dashboard", "aria-live": "polite" });
  main.replaceChildren(el("nav", { class: "dashboard-nav" }, el("a", { href: "/" }, "← runs"), range), body);
  let timer;
  let generation = 0;

  const section = (name, ...content) =>
    el("section", { "aria-labelledby": `h-${name.replace(/\W+/g, "-")}` }, el("h2", { id: `h-${name.replace(/\W+/g, "-")}` }, name), ...content);
  const table = (headers, rows, empty) =>
    rows.length
      ? el("table", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h))), ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c)))))
      : el("p", { class: "empty" }, empty);
  const runLink = (session) => el("a", { href: `/view/${encodeURIComponent(session)}` }, session);

  const widget = (figure) => {
    if (figure.kind === "counter") return el("p", { class: "counter" }, el("strong", {}, String(figure.value)));
    if (figure.kind === "timeseries") {
      return barChart(figure.title, figure.series.map((b) => ({ start: b.start, value: b.value })), [{ key: "value", label: "events" }]);
    }
    return table(["value", "count"], figure.rows.map((r) => [r.key, String(r.count)]), "Nothing matched in this range.");
  };

  const refresh = async () => {
    const mine = ++generation;
    clearTimeout(timer);
    const chosen = RANGES[range.value];
    const end = new Date();
    const start = new Date(end.getTime() - chosen.hours * 3600_000);
    const query = `startTime=${start.toISOString()}&endTime=${end.toISOString()}`;
    let report;
    let widgets;
    try {
      report = await client.request("GET", `/api/analytics/runs?${query}&bucket=${chosen.bucket}`);
      const configured = await client.request("GET", "/api/analytics/widgets");
      widgets = await Promise.all(configured.map((_, i) => client.request("GET", `/api/analytics/widgets/${i}?${query}`)));
    } catch (error) {
      return showProblem(error);
    }
    if (mine !== generation) return;
    const runs = report.runs;
    body.replaceChildren(
      section(
        "Runs",
        el(
          "dl",
          { class: "counters" },
          ...["total", "running", "completed", "failed", "cancelled", "closed"].flatMap((k) => [el("dt", {}, k), el("dd", { "data-counter": k }, String(runs[k]))]),
        ),
      ),
      section(
        "Runs over time",
        barChart(`Runs started, completed and failed, ${chosen.label}`, report.series, [
          { key: "started", label: "started" },
          { key: "completed", label: "completed" },
          { key: "failed", label: "failed" },
        ]),
        el("p", { class: "legend" }, el("span", { class: "started" }, "■ started "), el("span", { class: "completed" }, "■ completed "), el("span", { class: "failed" }, "■ failed")),
      ),
      section(
        "Top failing commands",
        table(
          ["command", "error", "failures", "latest run"],
          report.failingCommands.map((f) => [f.commandName, f.errorCode, String(f.count), runLink(f.lastSessionId)]),
          "No command failed in this range.",
        ),
      ),
      section(
        "Action durations",
        table(
          ["action", "commands", "failed", "p50", "p95"],
          report.actions.map((a) => [a.action, String(a.count), String(a.failures), ms(a.p50Ms), ms(a.p95Ms)]),
          "No command ended in this range.",
        ),
      ),
      section(
        "Slowest runs",
        table(["run", "duration"], report.slowestRuns.map((r) => [runLink(r.workflowSessionId), ms(r.durationMs)]), "No run in this range."),
      ),
      ...widgets.map((figure) => el("section", { class: "widget", "aria-label": figure.title }, el("h2", {}, figure.title), widget(figure))),
    );
    timer = setTimeout(refresh, REFRESH_MS);
  };
  range.addEventListener("change", refresh);
  refresh();
}
