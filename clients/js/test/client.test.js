// @executor-streamer/client against a real hub this test starts (`executor-streamer serve`,
// the Python of HUB_PYTHON or the repository's .venv), with node's test runner:
//
//   node --experimental-websocket --test clients/js/test/
//
// Fallbacks are tested through a small proxy in front of the hub that refuses WebSocket
// upgrades (and, for polling, SSE requests) and passes everything else through.

import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { EVENT_TYPES, HubError, createClient } from "../src/index.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const PYTHON = process.env.HUB_PYTHON ?? path.join(ROOT, ".venv/bin/python");
const SECRET = "js-sdk-test-secret-" + "j".repeat(32);

async function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function startHub(env = {}) {
  const port = await freePort();
  const hub = spawn(PYTHON, ["-m", "executor_streamer", "serve", "--host", "127.0.0.1", "--port", String(port)], {
    env: {
      ...process.env,
      EXECUTOR_STREAMER_LOGGING__LEVEL: "ERROR",
      EXECUTOR_STREAMER_SECURITY__RATE_LIMITING__ENABLED: "false",
      ...env,
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 150; i++) {
    try {
      if ((await fetch(`${url}/readyz`)).ok) return { url, stop: () => stopProcess(hub) };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  hub.kill("SIGKILL");
  throw new Error("the hub did not start");
}

function stopProcess(child) {
  return new Promise((resolve) => {
    child.once("exit", resolve);
    child.kill("SIGTERM");
  });
}

/** A proxy to `target` that refuses WebSocket upgrades, and SSE too when `refuseSse`. */
async function startProxy(target, { refuseSse = false } = {}) {
  const upstream = new URL(target);
  const server = http.createServer((request, response) => {
    if (refuseSse && request.method === "GET" && /\/events(\?|$)/.test(request.url)) {
      response.writeHead(502).end();
      return;
    }
    const forward = http.request(
      { host: upstream.hostname, port: upstream.port, path: request.url, method: request.method, headers: request.headers },
      (answer) => {
        response.writeHead(answer.statusCode, answer.headers);
        answer.pipe(response);
      },
    );
    forward.on("error", () => response.destroy());
    request.pipe(forward);
  });
  server.on("upgrade", (_request, socket) => socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"));
  const port = await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function status(n) {
  return { type: "STATUS", data: { statusType: "step", status: String(n) } };
}

async function take(sub, count, ms = 15_000) {
  const seqs = [];
  const deadline = setTimeout(() => sub.close(), ms);
  for await (const event of sub) {
    seqs.push(event.seq);
    if (seqs.length === count) break;
  }
  clearTimeout(deadline);
  return seqs;
}

async function clientsOf(url, stream) {
  return (await fetch(`${url}/api/streams/${stream}/clients`)).json();
}

async function until(predicate, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await sleep(20);
  }
  throw new Error("timed out waiting");
}

/** Publishes `total` events in batches while the hub drops every client of the stream
 * `drops` times; returns once all are published. */
async function publishWhileDropping(client, hubUrl, stream, total, drops) {
  const dropping = (async () => {
    for (let i = 0; i < drops; i++) {
      await sleep(120);
      for (const { id } of await clientsOf(hubUrl, stream)) {
        await fetch(`${hubUrl}/api/streams/${stream}/clients/${id}`, { method: "DELETE" });
      }
    }
  })();
  for (let start = 0; start < total; start += 10) {
    await client.publish(stream, Array.from({ length: 10 }, (_, i) => status(start + i)));
    await sleep(10);
  }
  await dropping;
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Subscribes through `url` from the start of a new stream while the hub (at `hubUrl`)
 * drops the client twice; every one of 200 events must arrive once, in order, over
 * `transport`. */
async function resumesExactly(url, hubUrl, stream, transport) {
  const client = createClient({ url });
  await client.request("POST", "/api/streams", { workflowSessionId: stream });
  const sub = client.subscribe(stream, { since: 0 });
  const received = take(sub, 200, 30_000);
  await publishWhileDropping(client, hubUrl, stream, 200, 2);
  assert.deepEqual(await received, range(1, 200));
  assert.equal(sub.transport, transport);
}

describe("against a hub", () => {
  let hub;
  before(async () => {
    hub = await startHub();
  });
  after(async () => hub.stop());

  test("event types are the hub's, from its JSON Schema", () => {
    const schema = JSON.parse(
      execFileSync(PYTHON, [
        "-c",
        "import json; from executor_streamer.types import StreamEvent; print(json.dumps(StreamEvent.model_json_schema()))",
      ]),
    );
    const typeSchema = schema.$defs.StreamEventType;
    assert.deepEqual([...EVENT_TYPES].sort(), [...typeSchema.enum].sort());
    // The declarations repeat the list as a type: they must say the same.
    const declarations = readFileSync(path.join(ROOT, "clients/js/src/index.d.ts"), "utf8");
    const declared = /EVENT_TYPES: readonly \[([^\]]*)\]/.exec(declarations)[1];
    assert.deepEqual([...declared.matchAll(/"([A-Z_]+)"/g)].map((m) => m[1]), [...EVENT_TYPES]);
  });

  test("a publish sent again with its idempotency key is stored once", async () => {
    const client = createClient({ url: hub.url });
    const first = await client.publish("js-idem", [status(1), status(2)], { idempotencyKey: "js-k1" });
    const again = await client.publish("js-idem", [status(1), status(2)], { idempotencyKey: "js-k1" });
    assert.deepEqual(again, first);
    const history = await client.request("GET", "/api/streams/js-idem/history");
    assert.equal(history.total, 2);
  });

  test("every typed publish is accepted, and a subscription sees them in order", async () => {
    const client = createClient({ url: hub.url });
    const stream = "js-typed";
    await client.publishReasoning(stream, "find the login form", 0.8, "planning");
    await client.publishCommandStarted(stream, "open", "NAVIGATE", { parameters: { url: "https://x.example" } });
    await client.publishCommandCompleted(stream, "open", { ok: true }, 412);
    await client.publishCommandFailed(stream, "click", { code: "E_TIMEOUT", message: "no button" }, 30);
    await client.publishVariableUpdate(stream, "cart", "2 items", { previousValue: "1 item" });
    await client.publishStatus(stream, "run", "ok", { message: "fine" });
    await client.publishError(stream, { code: "E", message: "it broke", recoverable: true });
    const png = execFileSync(PYTHON, ["-c", "import sys; from executor_streamer.demo import render_png; sys.stdout.buffer.write(render_png(8, 6, 0.5, 3))"]);
    const shot = await client.publishScreenshot(stream, new Uint8Array(png), { caption: "login" });
    assert.match(shot.data.url, /screenshots/);
    const sub = client.subscribe(stream, { since: 0 });
    const types = [];
    for await (const event of sub) {
      types.push(event.type);
      if (types.length === 8) break;
    }
    assert.deepEqual(types, ["REASONING", "COMMAND_STARTED", "COMMAND_COMPLETED", "COMMAND_FAILED", "VARIABLE_UPDATE", "STATUS", "ERROR", "SCREENSHOT"]);
    client.close();
  });

  test("search pages through runs newest first, filtered", async () => {
    const client = createClient({ url: hub.url });
    await client.publish("js-search-1", [status(1), status(2)]);
    await client.publishCommandFailed("js-search-2", "click_pay", { code: "TIMEOUT", message: "slow" }, 30);
    const mine = [];
    for await (const event of client.search(undefined, { streams: "js-search-*", pageSize: 1 })) mine.push(event);
    assert.deepEqual(mine.map((e) => [e.sessionId, e.seq]), [["js-search-2", 1], ["js-search-1", 2], ["js-search-1", 1]]);
    const failed = [];
    for await (const event of client.search('type == "COMMAND_FAILED" && data.error.code == "TIMEOUT"', { streams: "js-search-*", startTime: new Date(Date.now() - 3600_000) })) failed.push(event);
    assert.deepEqual(failed.map((e) => e.data.commandName), ["click_pay"]);
    const two = [];
    for await (const event of client.search(undefined, { streams: "js-search-*", pageSize: 1, limit: 2 })) two.push(event);
    assert.equal(two.length, 2);
    await assert.rejects(client.search("type ==").next(), (error) => error instanceof HubError && error.code === "INVALID_FILTER");
    const report = await client.runAnalytics({ streams: "js-search-*", bucket: "day" });
    assert.equal(report.runs.total, 2);
    assert.deepEqual(report.failingCommands.map((f) => [f.commandName, f.errorCode, f.count]), [["click_pay", "TIMEOUT", 1]]);
    await assert.rejects(client.widget(0), (error) => error instanceof HubError && error.code === "WIDGET_NOT_FOUND");
  });

  test("a bad publish is a HubError with the hub's code", async () => {
    const client = createClient({ url: hub.url });
    await assert.rejects(client.publish("js-bad", { type: "STATUS", data: {} }), (error) => {
      assert.ok(error instanceof HubError);
      assert.equal(error.code, "VALIDATION_ERROR");
      assert.equal(error.status, 422);
      return true;
    });
  });

  test("WebSocket: resumes after the hub drops it, no gap, no duplicate", async () => {
    const client = createClient({ url: hub.url });
    const stream = "js-resume-ws";
    await client.request("POST", "/api/streams", { workflowSessionId: stream });
    const sub = client.subscribe(stream, { since: 0 });
    const states = [];
    sub.on("state", (s) => states.push(s.state));
    const received = take(sub, 300, 30_000);
    await publishWhileDropping(client, hub.url, stream, 300, 3);
    assert.deepEqual(await received, range(1, 300));
    assert.equal(sub.transport, "websocket");
    assert.ok(states.includes("reconnecting"), states.join());
  });

  test("recovered: false surfaces as a state", async () => {
    const client = createClient({ url: hub.url });
    const stream = "js-trimmed";
    await client.request("POST", "/api/streams", { workflowSessionId: stream, config: { maxHistorySize: 5 } });
    await client.publish(stream, range(1, 10).map(status));
    const sub = client.subscribe(stream, { since: 0 });
    const states = [];
    sub.on("state", (s) => states.push(s));
    assert.deepEqual(await take(sub, 5), range(6, 10));
    assert.ok(states.some((s) => s.state === "live" && s.recovered === false));
    assert.equal(sub.recovered, false);
  });

  test("a throwing handler does not break the subscription", async () => {
    const client = createClient({ url: hub.url });
    const stream = "js-throwing";
    await client.publish(stream, range(1, 3).map(status));
    const sub = client.subscribe(stream, { since: 0 });
    const reported = [];
    sub.on("event", () => {
      throw new Error("the application's bug");
    });
    sub.on("error", (error) => reported.push(error.message));
    assert.deepEqual(await take(sub, 3), [1, 2, 3]);
    assert.equal(reported.length, 3);
  });

  test("breaking out of for await unsubscribes", async () => {
    const client = createClient({ url: hub.url });
    const stream = "js-break";
    await client.publish(stream, [status(1), status(2)]);
    const sub = client.subscribe(stream, { since: 0 });
    for await (const event of sub) {
      assert.equal(event.seq, 1);
      break;
    }
    assert.equal(sub.state, "closed");
    await until(async () => (await clientsOf(hub.url, stream)).length === 0);
  });

  test("an unknown stream ends the subscription with STREAM_NOT_FOUND", async () => {
    const client = createClient({ url: hub.url });
    const sub = client.subscribe("js-nothing-here", { since: 0 });
    await assert.rejects(take(sub, 1), (error) => error.code === "STREAM_NOT_FOUND");
    assert.equal(sub.state, "closed");
  });

  test("the iteration ends when the stream closes", async () => {
    const client = createClient({ url: hub.url });
    const stream = "js-closing";
    await client.publish(stream, status(1));
    const sub = client.subscribe(stream, { since: 0 });
    const reading = take(sub, 10);
    await until(async () => (await clientsOf(hub.url, stream)).length === 1);
    await fetch(`${hub.url}/api/streams/${stream}`, { method: "DELETE" });
    assert.deepEqual(await reading, [1]);
  });

  for (const transport of ["sse", "websocket"]) {
    test(`${transport}: the epoch is learned on subscribing; replays go to on("replay") only`, async () => {
      const client = createClient({ url: hub.url });
      const stream = `js-replay-${transport}`;
      await client.publish(stream, range(1, 3).map(status));
      const sub = client.subscribe(stream, { since: 0, transports: [transport] });
      const seen = [];
      const replayed = [];
      sub.on("event", (event) => seen.push(event.seq));
      sub.on("replay", (event) => replayed.push(event.seq));
      await until(() => seen.length === 3);
      const { epoch } = await client.request("GET", `/api/streams/${stream}`);
      assert.equal(sub.epoch, epoch);
      const [listed] = await clientsOf(hub.url, stream);
      await client.request("POST", `/api/streams/${stream}/replay/${listed.id}`, { afterSeq: 0 });
      await until(() => replayed.length === 3);
      assert.deepEqual(replayed, [1, 2, 3]);
      assert.equal(sub.position, 3); // a replay never moves it back
      await client.publish(stream, status(4));
      await until(() => seen.length === 4);
      assert.deepEqual(seen, [1, 2, 3, 4]);
      assert.equal(sub.position, 4);
      sub.close();
    });
  }

  for (const transport of ["websocket", "sse", "polling"]) {
    test(`${transport}: a filter expression chooses the events, with types`, async () => {
      const client = createClient({ url: hub.url });
      const stream = `js-filter-${transport}`;
      await client.publish(stream, range(1, 6).map(status));
      const sub = client.subscribe(stream, {
        since: 0,
        types: ["STATUS"],
        filter: "seq % 2 == 0 && data.statusType == 'step'",
        transports: [transport],
      });
      assert.deepEqual(await take(sub, 3), [2, 4, 6]);
    });

    test(`${transport}: an expression that does not compile ends the subscription with INVALID_FILTER`, async () => {
      const client = createClient({ url: hub.url });
      const stream = `js-bad-filter-${transport}`;
      await client.publish(stream, status(1));
      const sub = client.subscribe(stream, { since: 0, filter: "seq +", transports: [transport] });
      await assert.rejects(take(sub, 1), (error) => {
        assert.equal(error.code, "INVALID_FILTER");
        assert.equal(error.details.position, 5);
        return true;
      });
      assert.equal(sub.state, "closed");
    });
  }

  test("sse: live only, the position starts at the lastSeq the hub said on subscribing", async () => {
    const client = createClient({ url: hub.url });
    const stream = "js-live-sse";
    await client.publish(stream, range(1, 2).map(status));
    const sub = client.subscribe(stream, { transports: ["sse"] });
    await until(() => sub.state === "live");
    assert.equal(sub.position, 2);
    sub.close();
  });

  describe("through a proxy that refuses WebSocket upgrades", () => {
    let proxy;
    before(async () => {
      proxy = await startProxy(hub.url);
    });
    after(async () => proxy.stop());

    test("falls back to SSE, and resumes exactly there too", async () => {
      await resumesExactly(proxy.url, hub.url, "js-resume-sse", "sse");
    });
  });

  describe("through a proxy that refuses WebSocket and SSE", () => {
    let proxy;
    before(async () => {
      proxy = await startProxy(hub.url, { refuseSse: true });
    });
    after(async () => proxy.stop());

    test("falls back to long polling, live only without since", async () => {
      const client = createClient({ url: proxy.url });
      const stream = "js-poll";
      await client.publish(stream, status(1));
      const sub = client.subscribe(stream);
      const received = take(sub, 2, 20_000);
      await until(async () => sub.state === "live");
      await client.publish(stream, [status(2), status(3)]);
      assert.deepEqual(await received, [2, 3]);
      assert.equal(sub.transport, "polling");
    });

    test("long polling resumes exactly after the hub drops it", async () => {
      await resumesExactly(proxy.url, hub.url, "js-resume-poll", "polling");
    });
  });
});

describe("against a hub with authentication", () => {
  let hub;
  before(async () => {
    hub = await startHub({
      EXECUTOR_STREAMER_SECURITY__AUTHENTICATION_REQUIRED: "true",
      EXECUTOR_STREAMER_SECURITY__JWT__SECRET: SECRET,
    });
  });
  after(async () => hub.stop());

  test("getToken is asked for every connection and request", async () => {
    let asked = 0;
    const getToken = () => {
      asked += 1;
      return jwt({ sub: "js", exp: Math.floor(Date.now() / 1000) + 600, scope: { admin: true } });
    };
    const client = createClient({ url: hub.url, getToken });
    await client.publish("js-auth", status(1));
    for (const transport of ["websocket", "sse", "polling"]) {
      const sub = client.subscribe("js-auth", { since: 0, transports: [transport] });
      assert.deepEqual(await take(sub, 1), [1], transport);
    }
    assert.ok(asked >= 4, String(asked));
  });

  test("without a token: UNAUTHORIZED, not retried for ever", async () => {
    const client = createClient({ url: hub.url });
    await assert.rejects(client.publish("js-auth", status(2)), (error) => error.code === "UNAUTHORIZED");
    const sub = client.subscribe("js-auth", { since: 0, transports: ["sse"] });
    await assert.rejects(take(sub, 1), (error) => error.code === "UNAUTHORIZED");
  });

  test("a scope without the stream: FORBIDDEN", async () => {
    const getToken = () => jwt({ sub: "js", exp: Math.floor(Date.now() / 1000) + 600, scope: { subscribe: ["other-*"] } });
    const client = createClient({ url: hub.url, getToken });
    const sub = client.subscribe("js-auth", { since: 0 });
    await assert.rejects(take(sub, 1), (error) => error.code === "FORBIDDEN");
  });
});

function jwt(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}
