// Fan-out load generator: N subscribers on one stream, one publisher POSTing single
// events at a fixed rate, each event carrying its send time.
//
//   node loadgen.mjs '{"kind":"hub-ws-batch","base":"http://127.0.0.1:3001",
//                      "stream":"bench-1","subscribers":100,"rate":1000,"seconds":4}'
// (optional: "filter": "types" | "expression" | "expressions", what each hub WebSocket
// subscriber filters by).
//
// With "token" in the spec (a hub with authentication on), every request and WebSocket
// upgrade carries it as `Authorization: Bearer`. With "subscriberBases" (several hubs on
// one Redis), the hub's subscribers connect to those in turn; the publisher uses "base".
//
// Prints one JSON line: achieved rate, deliveries, loss, out-of-order deliveries and
// per-delivery latency percentiles (ms). Subscribers never parse whole events: they
// pick `"n":<seq>,"t":<send time>` out of the text, so the generator stays far cheaper
// than the servers it loads. Sender and receivers share one clock (this process).

import http from "node:http";
import { performance } from "node:perf_hooks";
import { io } from "socket.io-client";
import WebSocket from "ws";

const spec = JSON.parse(process.argv[2]);
const { kind, base, stream, subscribers, rate, seconds, token } = spec;
const subscriberBases = spec.subscriberBases ?? [base];
const auth = token ? { authorization: `Bearer ${token}` } : {};
const WARMUP = 20; // events sent slowly first, not measured: connections and JITs settle
const DRAIN_MS = 3000;
const MAX_IN_FLIGHT = 256;
const wsBase = base.replace(/^http/, "ws");
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const now = () => performance.timeOrigin + performance.now();
const hub = kind.startsWith("hub-");
// "filter" (hub WebSocket kinds): what each subscriber filters by. Every filter matches
// every event published, so every subscriber still takes every event: the difference in
// server CPU per delivery is what evaluating the filter costs.
const FILTERS = {
  types: () => [{ eventTypes: ["STATUS"] }],
  expression: () => [{ expression: 'type == "STATUS" && data.statusType == "bench"' }],
  expressions: (i) => [{ expression: `data.statusType == "bench" && metadata.n > -${i + 1}.0` }],
};
let subscriberIndex = 0;

// -- what every subscriber records -------------------------------------------------------

const total = WARMUP + Math.ceil(rate * seconds);
const latencies = new Float64Array(Math.ceil(rate * seconds * 1.05 + 16) * subscribers);
let recorded = 0;
let outOfOrder = 0;
let duplicates = 0;
let delivered = 0;

class Tally {
  constructor() {
    this.lastSeq = 0;
    this.last = 0;
    this.seen = new Uint8Array(total + 1);
    this.order = new Uint32Array(total); // the marks in the order they arrived
    this.received = 0;
    this.count = 0; // measured events received (n > WARMUP)
    this.ready = false;
  }
  receive(n, t, at, seq) {
    if (n > total) return;
    if (this.seen[n]) {
      duplicates++;
      return;
    }
    this.seen[n] = 1;
    this.order[this.received++] = n;
    if (seq !== undefined) {
      if (seq < this.lastSeq) outOfOrder++;
      this.lastSeq = seq;
    }
    this.last = Math.max(this.last, n);
    if (n > WARMUP) {
      this.count++;
      delivered++;
      if (recorded < latencies.length) latencies[recorded++] = at - t;
    }
  }
  // Finds each `"n":<seq>,"t":<time>` mark (and, in the hub's events, the `"seq":` before
  // it) with indexOf and parseInt/parseFloat, which stop at the first non-number: far
  // cheaper than a regular expression over the whole event.
  scan(text) {
    const at = now();
    let from = 0;
    for (;;) {
      let seq;
      if (hub) {
        const s = text.indexOf('"seq":', from);
        if (s < 0) return;
        seq = parseInt(text.slice(s + 6, s + 26), 10);
        from = s + 6;
      }
      const m = text.indexOf('"n":', from);
      if (m < 0) return;
      const t = text.indexOf('"t":', m) + 4;
      this.receive(parseInt(text.slice(m + 4, m + 24), 10), parseFloat(text.slice(t, t + 32)), at, seq);
      from = t;
    }
  }
}

// Without a server seq, order is checked against the first subscriber's: a broadcast
// must hand every subscriber the events in one order.
function peerOutOfOrder(tallies) {
  const rank = new Uint32Array(total + 1);
  const reference = tallies[0];
  for (let i = 0; i < reference.received; i++) rank[reference.order[i]] = i + 1;
  let count = 0;
  for (const tally of tallies.slice(1)) {
    let previous = 0;
    for (let i = 0; i < tally.received; i++) {
      const r = rank[tally.order[i]];
      if (r && r < previous) count++;
      previous = Math.max(previous, r);
    }
  }
  return count;
}

// -- subscribers, one kind per server ------------------------------------------------------

function hubWebSocket(tally, batch, from = base) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${from.replace(/^http/, "ws")}/ws`, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
      headers: auth,
    });
    ws.on("message", (data) => {
      const text = data.toString();
      if (tally.ready) return tally.scan(text);
      if (text.includes('"connection_ack"')) {
        const filters = spec.filter ? FILTERS[spec.filter](subscriberIndex++) : undefined;
        ws.send(JSON.stringify({ type: "subscribe", streamId: stream, batch, filters }));
      } else if (text.includes('"subscribed"')) {
        tally.ready = true;
        resolve(() => ws.terminate());
      } else {
        tally.scan(text);
      }
    });
    ws.on("error", reject);
  });
}

function plainWebSocket(tally, url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true });
    ws.on("open", () => {
      tally.ready = true;
      resolve(() => ws.terminate());
    });
    ws.on("message", (data) => tally.scan(data.toString()));
    ws.on("error", reject);
  });
}

function eventSource(tally, url) {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { agent: false, headers: auth }, (response) => {
      if (response.statusCode !== 200) return reject(new Error(`SSE ${response.statusCode}`));
      response.setEncoding("utf8");
      let pending = "";
      response.on("data", (chunk) => {
        // Marks never span lines, and servers end lines with \n or \r\n.
        pending += chunk;
        const end = pending.lastIndexOf("\n");
        if (end < 0) return;
        tally.scan(pending.slice(0, end));
        pending = pending.slice(end + 1);
      });
      tally.ready = true;
      resolve(() => request.destroy());
    });
    request.on("error", (error) => (tally.ready ? undefined : reject(error)));
  });
}

function longPoll(tally) {
  let since = 0;
  let stopped = false;
  let clientId = "";
  const pollAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const poll = () => {
    if (stopped) return;
    const query = `since=${since}&timeout=25${clientId ? `&clientId=${clientId}` : ""}`;
    const url = `${base}/api/streams/${stream}/poll?${query}`;
    const request = http.get(url, { agent: pollAgent, headers: auth }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk) => (body += chunk));
      response.on("end", () => {
        tally.scan(body);
        const last = /"lastSeq":(\d+)/.exec(body);
        if (last) since = +last[1];
        const id = /"clientId":"([^"]+)"/.exec(body);
        if (id) clientId = id[1];
        poll();
      });
    });
    request.on("error", () => setTimeout(poll, 100));
  };
  poll();
  tally.ready = true;
  return Promise.resolve(() => {
    stopped = true;
    pollAgent.destroy();
  });
}

function socketIo(tally) {
  return new Promise((resolve, reject) => {
    const socket = io(base, { transports: ["websocket"], forceNew: true });
    socket.on("event", (data) => tally.receive(data.n, data.t, now()));
    socket.on("connect", () => {
      socket.emit("join", stream, () => {
        tally.ready = true;
        resolve(() => socket.close());
      });
    });
    socket.on("connect_error", reject);
  });
}

const SUBSCRIBE = {
  "hub-ws-batch": (tally, from) => hubWebSocket(tally, true, from),
  "hub-ws": (tally, from) => hubWebSocket(tally, false, from),
  "hub-sse": (tally, from) => eventSource(tally, `${from}/api/streams/${stream}/events`),
  "hub-poll": (tally) => longPoll(tally),
  "ws-peer": (tally) => plainWebSocket(tally, `${wsBase}/`),
  "socketio-peer": (tally) => socketIo(tally),
  "sse-peer": (tally) => eventSource(tally, `${base}/events`),
};

// -- the publisher ---------------------------------------------------------------------------

const publishPath = hub ? `/api/streams/${stream}/events` : "/publish";

function body(n) {
  const mark = `{"n":${n},"t":${now()}}`;
  if (!hub) return mark;
  return `{"type":"STATUS","data":{"statusType":"bench","status":"running"},"metadata":${mark}}`;
}

function post(path, payload) {
  return new Promise((resolve, reject) => {
    const request = http.request(
      `${base}${path}`,
      { method: "POST", agent, headers: { "content-type": "application/json", ...auth } },
      (response) => {
        response.resume();
        response.on("end", () =>
          response.statusCode < 300 ? resolve() : reject(new Error(`POST ${response.statusCode}`)),
        );
      },
    );
    request.on("error", reject);
    request.end(payload);
  });
}

let failures = 0;

async function publish(fromN, count, perSecond) {
  const started = performance.now();
  let sent = 0;
  let inFlight = 0;
  let drained = null;
  while (sent < count) {
    const due = Math.min(count, Math.floor(((performance.now() - started) / 1000) * perSecond) + 1);
    while (sent < due && inFlight < MAX_IN_FLIGHT) {
      const n = fromN + sent++;
      inFlight++;
      post(publishPath, body(n))
        .catch(() => failures++)
        .finally(() => {
          inFlight--;
          if (drained && inFlight === 0) drained();
        });
    }
    await new Promise((resolve) => setImmediate(resolve));
    if (sent < due) await new Promise((resolve) => setTimeout(resolve, 1));
    else await new Promise((resolve) => setTimeout(resolve, 0));
  }
  if (inFlight) await new Promise((resolve) => (drained = resolve));
  return (performance.now() - started) / 1000;
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main() {
  if (hub) await post("/api/streams", JSON.stringify({ workflowSessionId: stream }));
  const tallies = Array.from({ length: subscribers }, () => new Tally());
  const connectStarted = performance.now();
  const closers = [];
  for (let i = 0; i < tallies.length; i += 20) {
    const group = tallies.slice(i, i + 20);
    const from = (j) => subscriberBases[(i + j) % subscriberBases.length];
    closers.push(...(await Promise.all(group.map((t, j) => SUBSCRIBE[kind](t, from(j))))));
  }
  const connectSeconds = (performance.now() - connectStarted) / 1000;

  await publish(1, WARMUP, 50);
  const warm = Date.now();
  while (tallies.some((t) => t.last < WARMUP) && Date.now() - warm < DRAIN_MS) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }

  const measured = total - WARMUP;
  const elapsed = await publish(WARMUP + 1, measured, rate);
  const drainStarted = Date.now();
  while (tallies.some((t) => t.count < measured) && Date.now() - drainStarted < DRAIN_MS) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  for (const close of closers) close();
  agent.destroy();
  if (!hub) outOfOrder = peerOutOfOrder(tallies);

  const sorted = latencies.subarray(0, recorded).sort();
  const round = (x) => (x === null ? null : Math.round(x * 100) / 100);
  const expected = measured * subscribers;
  console.log(
    JSON.stringify({
      kind,
      subscribers,
      rate,
      achievedRate: Math.round(measured / elapsed),
      published: measured - failures,
      publishFailures: failures,
      expected,
      delivered,
      lost: expected - delivered,
      outOfOrder,
      duplicates,
      p50: round(percentile(sorted, 50)),
      p90: round(percentile(sorted, 90)),
      p99: round(percentile(sorted, 99)),
      max: round(sorted.length ? sorted[sorted.length - 1] : null),
      connectSeconds: round(connectSeconds),
    }),
  );
  process.exit(0);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
