// The hub's live viewer (docs/viewer.md). Plain ES modules, no build step. Everything an
// event carries is shown as text (textContent), never parsed as HTML.

import { EVENT_TYPES, HubError, createClient } from "/viewer/client.js";
import { dashboard } from "/viewer/dashboard.js";

const ROW_HEIGHT = 28;
const OVERSCAN = 10;

const main = document.getElementById("main");
const title = document.getElementById("title");
const connection = document.getElementById("connection");
const token = takeToken();
const client = createClient({ url: location.origin, getToken: token ? () => token : undefined });

// -- small helpers -----------------------------------------------------------------------------

/** An element with attributes and children; strings become text nodes, never HTML. */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A token from the URL fragment (#token=…, then removed from the address bar) or from
 * this tab's session storage. */
function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromUrl = fragment.get("token");
  if (fromUrl) {
    sessionStorage.setItem("executor-streamer-token", fromUrl);
    fragment.delete("token");
    const rest = fragment.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
  return sessionStorage.getItem("executor-streamer-token") || undefined;
}

function askForToken(reason) {
  main.replaceChildren(
    el(
      "form",
      {
        class: "token-form",
        onsubmit: (event) => {
          event.preventDefault();
          sessionStorage.setItem("executor-streamer-token", event.target.elements.token.value.trim());
          location.reload();
        },
      },
      el("p", {}, reason),
      el("input", { name: "token", type: "password", placeholder: "a token (JWT or API key)", autocomplete: "off" }),
      el("button", { type: "submit" }, "Watch"),
    ),
  );
}

function showProblem(error) {
  if (error instanceof HubError && error.code === "UNAUTHORIZED") {
    return askForToken("This hub needs a token.");
  }
  main.replaceChildren(el("p", { class: "problem" }, `${error.code ?? "ERROR"}: ${error.message}`));
}

function time(timestamp) {
  return timestamp ? timestamp.slice(11, 23) : "";
}

// -- the run list ------------------------------------------------------------------------------

async function runList() {
  title.textContent = "runs";
  const table = el("table", { class: "runs" });
  const where = el("input", {
    id: "run-search",
    type: "search",
    placeholder: 'runs where… e.g. type == "COMMAND_FAILED" && data.error.code == "TIMEOUT"',
    "aria-label": "Runs with an event where (a filter expression)",
  });
  const problem = el("span", { id: "run-search-problem", class: "search-problem", role: "status" });
  const form = el("form", { class: "run-search" }, where, el("button", { type: "submit" }, "Find runs"), problem);
  main.replaceChildren(el("nav", { class: "dashboard-nav" }, el("a", { href: "/dashboard" }, "Dashboard")), form, table);
  let expression = "";
  let timer;
  let generation = 0; // a refresh answered after a newer search began draws nothing
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    expression = where.value.trim();
    generation += 1;
    clearTimeout(timer);
    refresh();
  });
  /** Runs with an event where `expression` holds (GET /api/search): sessionId -> count. */
  const matchingRuns = async () => {
    const counts = new Map();
    for await (const event of client.search(expression, { pageSize: 1000, limit: 5000 })) {
      counts.set(event.sessionId, (counts.get(event.sessionId) ?? 0) + 1);
    }
    return counts;
  };
  const refresh = async () => {
    const mine = generation;
    let streams;
    let matches;
    try {
      // finished runs too; the newest 1,000 (the list is newest activity first)
      streams = await client.request("GET", "/api/streams?all=true&limit=1000");
      matches = expression ? await matchingRuns() : undefined;
      problem.textContent = "";
    } catch (error) {
      if (!(error instanceof HubError && error.code === "INVALID_FILTER")) return showProblem(error);
      problem.textContent = `${error.message}${error.details?.position === undefined ? "" : ` (at ${error.details.position})`}`;
      matches = new Map();
    }
    if (mine !== generation) return;
    if (matches) streams = streams.filter((stream) => matches.has(stream.linkedWorkflowSessionId));
    streams.sort((a, b) => (b.lastActivity ?? "").localeCompare(a.lastActivity ?? ""));
    table.replaceChildren(
      el(
        "tr",
        {},
        el("th", {}, "run"),
        el("th", {}, "status"),
        el("th", {}, "events"),
        ...(matches ? [el("th", {}, "matching")] : []),
        el("th", {}, "last activity"),
      ),
      ...streams.map((stream) =>
        el(
          "tr",
          {},
          el("td", {}, el("a", { href: `/view/${encodeURIComponent(stream.linkedWorkflowSessionId)}` }, stream.linkedWorkflowSessionId)),
          el("td", {}, stream.status),
          el("td", {}, stream.lastSeq),
          ...(matches ? [el("td", { class: "matching" }, String(matches.get(stream.linkedWorkflowSessionId)))] : []),
          el("td", {}, stream.lastActivity ?? ""),
        ),
      ),
    );
    if (!streams.length) {
      const empty = expression ? `No run has an event where ${expression}.` : "No runs yet: `executor-streamer demo` publishes one.";
      table.append(el("tr", {}, el("td", { colspan: 5 }, empty)));
    }
    // The list follows new runs every 3 s; a search is run again only when asked (it may
    // read a long history).
    if (!expression) timer = setTimeout(refresh, 3000);
  };
  refresh();
}

// -- one run -----------------------------------------------------------------------------------

/** Events folded into rows: a command's start and its end are one row. */
class Run {
  constructor() {
    this.count = 0;
    this.items = [];
    this.bySeq = new Map(); // seq -> item
    this.commands = new Map(); // commandId -> item still waiting for its end
    this.screenshots = [];
    this.variables = new Map(); // name -> [{seq, value, previousValue}]
  }

  add(event) {
    this.count += 1;
    const data = event.data ?? {};
    let item;
    if ((event.type === "COMMAND_COMPLETED" || event.type === "COMMAND_FAILED") && this.commands.has(data.commandId)) {
      item = this.commands.get(data.commandId);
      this.commands.delete(data.commandId);
      item.events.push(event);
      item.end = event;
    } else {
      item = { seq: event.seq, type: event.type, events: [event], end: undefined };
      this.items.push(item);
      if (event.type === "COMMAND_STARTED" && data.commandId) this.commands.set(data.commandId, item);
    }
    item.text = undefined; // searched text, rebuilt when needed
    this.bySeq.set(event.seq, item);
    if (event.type === "SCREENSHOT") this.screenshots.push(event);
    if (event.type === "VARIABLE_UPDATE") {
      const history = this.variables.get(data.name) ?? [];
      history.push({ seq: event.seq, value: data.value, previousValue: data.previousValue });
      this.variables.set(data.name, history);
    }
  }
}

function summary(item) {
  const first = item.events[0];
  const data = first.data ?? {};
  switch (item.type) {
    case "COMMAND_STARTED": {
      const end = item.end;
      const outcome = !end ? "running…" : end.type === "COMMAND_FAILED" ? `failed: ${end.data.error?.message ?? ""}` : `${end.data.duration} ms`;
      return `${data.action ?? ""} ${data.commandName ?? ""} — ${outcome}`;
    }
    case "COMMAND_COMPLETED":
      return `${data.commandName} completed in ${data.duration} ms`;
    case "COMMAND_FAILED":
      return `${data.commandName} failed: ${data.error?.message ?? ""}`;
    case "REASONING":
      return data.thought;
    case "STATUS":
      return `${data.statusType}: ${data.status}${data.message ? ` — ${data.message}` : ""}`;
    case "ERROR":
      return `${data.code}: ${data.message}`;
    case "VARIABLE_UPDATE":
      return `${data.name} = ${data.value}`;
    case "SCREENSHOT":
      return data.caption ?? "screenshot";
    default:
      return "";
  }
}

function kind(item) {
  if (item.type === "COMMAND_STARTED") return item.end ? "command" : "command …";
  return item.type.replace("_", " ").toLowerCase();
}

function failed(item) {
  return item.type === "ERROR" || item.type === "COMMAND_FAILED" || item.end?.type === "COMMAND_FAILED";
}

function runView(ref) {
  title.textContent = ref;
  const run = new Run();
  const state = { types: new Set(EVENT_TYPES), search: "", follow: true, selected: undefined, wantedSeq: undefined };
  const wanted = Number(new URLSearchParams(location.hash.slice(1)).get("seq"));
  if (wanted > 0) {
    state.wantedSeq = wanted;
    state.follow = false;
  }

  const count = el("span", { id: "count" }, "0 events");
  const follow = el("input", { type: "checkbox", id: "follow", checked: state.follow });
  follow.addEventListener("change", () => {
    state.follow = follow.checked;
    schedule();
  });
  const search = el("input", {
    type: "search",
    id: "search",
    placeholder: "search, or ? and an expression",
    title: 'Text to find, or "?" and a CEL expression the hub evaluates: ? data.error.code == "TIMEOUT"',
    "aria-describedby": "search-problem",
  });
  const searchProblem = el("span", { id: "search-problem", class: "search-problem", role: "status" });
  let searchTimer;
  search.addEventListener("input", () => {
    const text = search.value;
    if (!text.startsWith("?")) {
      useExpression(undefined);
      state.search = text.toLowerCase();
      schedule();
      return;
    }
    // Typing an expression: ask the hub once the typing pauses, not at every key.
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => useExpression(text.slice(1).trim() || undefined), 300);
  });
  const typeBoxes = EVENT_TYPES.map((type) => {
    const box = el("input", { type: "checkbox", checked: true, "data-type": type });
    box.addEventListener("change", () => {
      if (box.checked) state.types.add(type);
      else state.types.delete(type);
      schedule();
    });
    return el("label", { class: `type type-${type}` }, box, type.replace("_", " ").toLowerCase());
  });
  const toolbar = el("div", { class: "toolbar" }, count, el("label", {}, follow, "follow live"), search, searchProblem, ...typeBoxes);

  // "?" and an expression: the hub evaluates it (docs/expressions.md). A subscription with the
  // expression as its filter, from seq 0, names every matching event, past and live; the list
  // shows the rows holding one of them.
  let matching; // {text, seqs: Set, sub} while an expression is in use
  function useExpression(text) {
    if (matching?.text === text) return;
    matching?.sub.close();
    matching = undefined;
    searchProblem.textContent = "";
    state.search = "";
    if (text !== undefined) {
      const current = { text, seqs: new Set(), sub: client.subscribe(ref, { since: 0, filter: text }) };
      matching = current;
      current.sub.on("event", (event) => {
        current.seqs.add(event.seq);
        schedule();
      });
      current.sub.on("error", (error) => {
        if (matching !== current || !(error instanceof HubError)) return;
        const where = error.details?.line ? ` (line ${error.details.line}, column ${error.details.column})` : "";
        searchProblem.textContent = `${error.details?.message ?? error.message}${where}`;
        schedule();
      });
    }
    schedule();
  }

  const spacer = el("div", { class: "spacer" });
  const rows = el("div", { class: "rows" });
  const list = el("div", { class: "list", id: "list", tabindex: 0 }, spacer, rows);
  list.addEventListener("scroll", () => schedule());
  list.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    event.preventDefault();
    const visible = filtered();
    const at = visible.indexOf(state.selected);
    const next = visible[Math.max(0, Math.min(visible.length - 1, at + (event.key === "ArrowDown" ? 1 : -1)))];
    if (next) select(next, true);
  });

  const detail = el("div", { class: "detail", id: "detail" });
  const shot = el("img", { class: "shot", id: "shot", alt: "" });
  const shotCaption = el("div", { class: "caption" });
  const filmstrip = el("div", { class: "filmstrip", id: "filmstrip" });
  const variables = el("div", { class: "variables", id: "variables" });

  main.replaceChildren(
    toolbar,
    el(
      "div",
      { class: "run" },
      list,
      el("div", { class: "side" }, el("section", { class: "screen" }, shot, shotCaption), filmstrip, detail, variables),
    ),
  );

  let dirty = false;
  function schedule() {
    if (dirty) return;
    dirty = true;
    requestAnimationFrame(render);
  }

  let cachedKey;
  let cachedVisible = [];
  function filtered() {
    const expression = matching ? `${matching.text}|${matching.seqs.size}|${searchProblem.textContent}` : "";
    const key = `${run.count}|${[...state.types].join()}|${state.search}|${expression}`;
    if (key === cachedKey) return cachedVisible;
    cachedKey = key;
    cachedVisible = run.items.filter((item) => {
      if (!item.events.some((event) => state.types.has(event.type))) return false;
      if (matching) return item.events.some((event) => matching.seqs.has(event.seq));
      if (!state.search) return true;
      item.text ??= item.events.map((event) => JSON.stringify(event.data)).join(" ").toLowerCase();
      return item.text.includes(state.search);
    });
    return cachedVisible;
  }

  function select(item, byUser) {
    state.selected = item;
    if (byUser) {
      state.follow = false;
      follow.checked = false;
      history.replaceState(null, "", `#seq=${item.seq}`);
    }
    schedule();
  }

  function render() {
    dirty = false;
    const visible = filtered();
    count.textContent = `${run.count} events`;
    if (state.wantedSeq !== undefined && run.bySeq.has(state.wantedSeq)) {
      state.selected = run.bySeq.get(state.wantedSeq);
      const index = visible.indexOf(state.selected);
      if (index >= 0) list.scrollTop = Math.max(0, index * ROW_HEIGHT - list.clientHeight / 2);
      state.wantedSeq = undefined;
    }
    if (state.follow && visible.length) {
      state.selected = visible[visible.length - 1];
      list.scrollTop = visible.length * ROW_HEIGHT;
    }
    spacer.style.height = `${visible.length * ROW_HEIGHT}px`;
    const first = Math.max(0, Math.floor(list.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(visible.length, Math.ceil((list.scrollTop + list.clientHeight) / ROW_HEIGHT) + OVERSCAN);
    rows.style.transform = `translateY(${first * ROW_HEIGHT}px)`;
    rows.replaceChildren(
      ...visible.slice(first, last).map((item) =>
        el(
          "div",
          {
            class: `row type-${item.type}${failed(item) ? " failed" : ""}${item === state.selected ? " selected" : ""}`,
            "data-seq": item.seq,
            onclick: () => select(item, true),
          },
          el("span", { class: "seq" }, item.seq),
          el("span", { class: "time" }, time(item.events[0].timestamp)),
          el("span", { class: "kind" }, kind(item)),
          el("span", { class: "text" }, summary(item)),
        ),
      ),
    );
    renderDetail();
    renderScreens();
    renderVariables();
  }

  let shownDetail;
  function renderDetail() {
    const item = state.selected;
    if (item === shownDetail && item?.events.length === shownDetail?.shown) return;
    shownDetail = item;
    if (!item) return detail.replaceChildren();
    item.shown = item.events.length;
    detail.replaceChildren(
      ...item.events.map((event) =>
        el(
          "article",
          { "data-seq": event.seq },
          el("h3", {}, `#${event.seq} ${event.type} `, el("small", {}, event.timestamp)),
          el("pre", {}, JSON.stringify({ data: event.data, metadata: event.metadata }, null, 2)),
        ),
      ),
    );
  }

  let shownShot;
  let stripCount = 0;
  function renderScreens() {
    const seq = state.selected?.seq ?? Infinity;
    let current; // the last screenshot at or before the selection, else the first
    for (const screenshot of run.screenshots) {
      if (screenshot.seq > seq) break;
      current = screenshot;
    }
    current ??= run.screenshots[0];
    if (current && current !== shownShot) {
      shownShot = current;
      image(current.data.url).then((src) => {
        if (shownShot === current) shot.src = src;
      });
      shotCaption.textContent = `#${current.seq} ${current.data.caption ?? ""} ${current.data.pageUrl ?? ""}`;
    }
    if (stripCount !== run.screenshots.length) {
      for (const screenshot of run.screenshots.slice(stripCount)) {
        const thumb = el("img", { alt: screenshot.data.caption ?? "", "data-seq": screenshot.seq, title: `#${screenshot.seq}` });
        thumb.addEventListener("click", () => select(run.bySeq.get(screenshot.seq), true));
        image(screenshot.data.url).then((src) => (thumb.src = src));
        filmstrip.append(thumb);
      }
      stripCount = run.screenshots.length;
    }
    for (const thumb of filmstrip.children) thumb.classList.toggle("current", Number(thumb.dataset.seq) === shownShot?.seq);
  }

  let shownVariables = -1;
  function renderVariables() {
    if (shownVariables === run.count) return;
    shownVariables = run.count;
    variables.replaceChildren(
      el("h3", {}, "variables"),
      ...[...run.variables].map(([name, changes]) =>
        el(
          "details",
          { class: "variable" },
          el("summary", {}, el("b", {}, name), " = ", changes[changes.length - 1].value),
          el("ol", {}, ...changes.map((change) => el("li", {}, `#${change.seq}: ${change.previousValue ?? "∅"} → ${change.value}`))),
        ),
      ),
    );
  }

  const sub = client.subscribe(ref, { since: 0 });
  sub.on("state", (change) => {
    connection.dataset.state = change.state;
    connection.title = `${change.state} (${change.transport ?? "…"})${change.recovered ? "" : ", history incomplete"}`;
  });
  sub.on("event", (event) => {
    run.add(event);
    schedule();
  });
  sub.on("error", (error) => {
    if (error instanceof HubError) showProblem(error);
  });
  window.executorStreamerViewer = { run, sub }; // for the tests and the curious
  schedule();
}

// -- images: with a token they are fetched (an <img> cannot send a header) --------------------

const images = new Map();
function image(url) {
  if (!token) return Promise.resolve(url);
  if (!images.has(url)) {
    images.set(
      url,
      fetch(url, { headers: { authorization: `Bearer ${token}` } })
        .then((response) => response.blob())
        .then((blob) => URL.createObjectURL(blob)),
    );
  }
  return images.get(url);
}

// -- start (last: the classes above are defined by now) ----------------------------------------

/** Ask the hub about the run before subscribing: with authentication on and no token, a
 * subscription would wait out the hub's time for an auth message (10 s) before it could say
 * so, showing an empty run meanwhile; the request is refused at once. */
async function openRun(ref) {
  title.textContent = ref;
  try {
    await client.request("GET", `/api/streams/${encodeURIComponent(ref)}`);
  } catch (error) {
    return showProblem(error);
  }
  runView(ref);
}

if (location.pathname.startsWith("/view/")) {
  openRun(decodeURIComponent(location.pathname.slice("/view/".length)));
} else if (location.pathname === "/dashboard") {
  dashboard({ main, title, client, el, showProblem });
} else {
  runList();
}
