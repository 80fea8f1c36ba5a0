// @executor-streamer/client: publish into and watch an Executor Streamer hub, from a
// browser or Node >= 20, with no dependencies. The hub's protocols are in its docs/
// (protocol.md, rest.md, security.md); this file follows them.
//
//   const client = createClient({ url: "http://localhost:3001", getToken });
//   const sub = client.subscribe("wf-1", { types: ["COMMAND_FAILED"], since: 0 });
//   const timeouts = client.subscribe("wf-1", { filter: 'data.error.code == "TIMEOUT"' });
//   sub.on("state", (s) => console.log(s.state, s.recovered));
//   for await (const event of sub) console.log(event.seq, event.type);
//
// A subscription reconnects with jittered backoff and resumes from `position` (the last
// seq it handed over) and the stream's epoch: no gap, no duplicate. Events an operator
// replays to it go to `on("replay")` only: never into the iteration, never moving
// `position`. It tries WebSocket,
// then Server-Sent Events (over fetch, so headers work), then long polling, moving on when
// a transport is refused before it ever delivered.

/** Every event type the hub knows (checked against the hub's JSON Schema in the tests). */
export const EVENT_TYPES = Object.freeze([
  "REASONING",
  "COMMAND_STARTED",
  "COMMAND_COMPLETED",
  "COMMAND_FAILED",
  "SCREENSHOT",
  "VARIABLE_UPDATE",
  "STATUS",
  "ERROR",
]);

export const TRANSPORTS = Object.freeze(["websocket", "sse", "polling"]);

const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 5000;
const POLL_TIMEOUT_S = 25;
const REFRESH_BEFORE_MS = 30_000; // refresh a WebSocket's credential this long before expiry

/** An error answered by the hub: `code` is its stable code (docs/rest.md). */
export class HubError extends Error {
  constructor(code, message, details = {}, status = undefined) {
    super(message);
    this.name = "HubError";
    this.code = code;
    this.details = details;
    this.status = status;
  }
}

/** Codes after which trying again cannot help (unless a new token can: UNAUTHORIZED). */
const FATAL = new Set(["STREAM_NOT_FOUND", "FORBIDDEN", "VALIDATION_ERROR", "INVALID_FILTER", "UNAUTHORIZED"]);
const CLOSE_CODES = { 4001: "UNAUTHORIZED", 4003: "FORBIDDEN", 4004: "STREAM_NOT_FOUND" };

export function createClient(options) {
  return new Client(options);
}

export class Client {
  constructor({
    url,
    getToken,
    transports = TRANSPORTS,
    WebSocket: WebSocketClass = globalThis.WebSocket,
    fetch: fetchFunction = globalThis.fetch,
  }) {
    if (!url) throw new TypeError("createClient needs { url }");
    this.url = url.replace(/\/+$/, "");
    this.getToken = getToken;
    this.transports = transports.filter((t) => t !== "websocket" || WebSocketClass);
    this.WebSocket = WebSocketClass;
    this.fetch = fetchFunction.bind(globalThis);
    this.subscriptions = new Set();
  }

  async token() {
    return this.getToken ? await this.getToken() : undefined;
  }

  async headers(extra = {}) {
    const token = await this.token();
    return token ? { ...extra, authorization: `Bearer ${token}` } : { ...extra };
  }

  async request(method, path, body, extraHeaders = {}) {
    const headers = await this.headers({
      ...(body === undefined ? {} : { "content-type": "application/json" }),
      ...extraHeaders,
    });
    const response = await this.fetch(this.url + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return answer(response);
  }

  /**
   * Events across runs that match, newest first (`GET /api/search`, docs/query.md), page
   * after page: `for await (const event of client.search('type == "ERROR"'))`. `filter`
   * is an expression; `streams` a run pattern (`team-a:*`); `startTime`/`endTime` Dates
   * or RFC 3339 strings; iteration stops after `limit` events if given.
   */
  async *search(filter, { startTime, endTime, streams, pageSize = 100, limit } = {}) {
    const params = new URLSearchParams({ limit: String(pageSize) });
    if (filter) params.set("filter", filter);
    if (streams) params.set("streams", streams);
    for (const [name, value] of rangeParams(startTime, endTime)) params.set(name, value);
    let given = 0;
    for (;;) {
      const page = await this.request("GET", `/api/search?${params}`);
      for (const event of page.events) {
        yield event;
        given += 1;
        if (limit !== undefined && given >= limit) return;
      }
      if (page.nextCursor === null) return;
      params.set("cursor", page.nextCursor);
    }
  }

  /** `GET /api/analytics/runs` (docs/query.md); default the last 24 hours, by hour. */
  runAnalytics({ startTime, endTime, streams, bucket = "hour" } = {}) {
    const params = rangeParams(startTime, endTime);
    params.set("bucket", bucket);
    if (streams) params.set("streams", streams);
    return this.request("GET", `/api/analytics/runs?${params}`);
  }

  /** One configured dashboard widget's figure (`GET /api/analytics/widgets/{index}`). */
  widget(index, { startTime, endTime } = {}) {
    return this.request("GET", `/api/analytics/widgets/${Number(index)}?${rangeParams(startTime, endTime)}`);
  }

  /**
   * Publish one event `{type, data, metadata?}` or an array of them (one batch). With
   * `idempotencyKey`, sending the same publish again (after a timeout, say) within 5
   * minutes stores nothing and returns what the first one stored.
   */
  async publish(stream, events, { idempotencyKey } = {}) {
    const body = Array.isArray(events) ? (events.length === 1 ? events[0] : { events }) : events;
    const extra = idempotencyKey === undefined ? {} : { "idempotency-key": idempotencyKey };
    const stored = await this.request("POST", `/api/streams/${encodeURIComponent(stream)}/events`, body, extra);
    return Array.isArray(events) ? stored.events : stored.events[0];
  }

  publishReasoning(stream, thought, confidence, reasoningType, { context, metadata } = {}) {
    return this.publish(stream, event("REASONING", { thought, confidence, reasoningType, context }, metadata));
  }

  publishCommandStarted(stream, commandName, action, { parameters = {}, commandId, metadata } = {}) {
    return this.publish(stream, event("COMMAND_STARTED", { commandName, action, parameters, commandId }, metadata));
  }

  publishCommandCompleted(stream, commandName, result, duration, { commandId, metadata } = {}) {
    return this.publish(stream, event("COMMAND_COMPLETED", { commandName, result, duration, commandId }, metadata));
  }

  publishCommandFailed(stream, commandName, error, duration, { commandId, metadata } = {}) {
    return this.publish(stream, event("COMMAND_FAILED", { commandName, error, duration, commandId }, metadata));
  }

  publishVariableUpdate(stream, name, value, { previousValue, metadata } = {}) {
    return this.publish(stream, event("VARIABLE_UPDATE", { name, value, previousValue }, metadata));
  }

  publishStatus(stream, statusType, status, { message, metadata } = {}) {
    return this.publish(stream, event("STATUS", { statusType, status, message }, metadata));
  }

  publishError(stream, error, { metadata } = {}) {
    return this.publish(stream, event("ERROR", error, metadata));
  }

  /** `image` is base64 text, or bytes (Uint8Array / ArrayBuffer). */
  publishScreenshot(stream, image, { mimeType = "image/png", width, height, caption, commandId, pageUrl, metadata } = {}) {
    const data = { image: typeof image === "string" ? image : base64(image), mimeType, width, height, caption, commandId, pageUrl };
    return this.publish(stream, event("SCREENSHOT", data, metadata));
  }

  subscribe(stream, options = {}) {
    const subscription = new Subscription(this, stream, options);
    this.subscriptions.add(subscription);
    subscription.on("state", (s) => s.state === "closed" && this.subscriptions.delete(subscription));
    return subscription;
  }

  close() {
    for (const subscription of [...this.subscriptions]) subscription.close();
  }
}

export class Subscription {
  constructor(client, stream, { types, filter, since, transports } = {}) {
    this.client = client;
    this.stream = stream;
    this.types = types && types.length ? [...types] : undefined;
    /** A CEL expression (docs/expressions.md), ANDed with `types`. */
    this.filter = filter || undefined;
    /** The last seq handed to the application: where a reconnect resumes from. */
    this.position = since ?? undefined;
    this.epoch = undefined;
    this.recovered = true;
    this.state = "connecting";
    this.transport = undefined;
    this.error = undefined;
    this.transports = (transports ?? client.transports).filter((t) => client.transports.includes(t));
    this.listeners = { event: new Set(), state: new Set(), error: new Set(), replay: new Set() };
    this.buffer = []; // events for `for await`, kept only once somebody iterates
    this.iterating = false;
    this.waiting = undefined;
    this.closed = false;
    this.stopCurrent = undefined;
    this.run();
  }

  /** `on("event" | "state" | "error" | "replay", fn)`; returns a function that removes `fn`. */
  on(kind, handler) {
    this.listeners[kind].add(handler);
    return () => this.listeners[kind].delete(handler);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.stopCurrent?.();
    this.setState("closed");
    this.wake();
  }

  [Symbol.asyncIterator]() {
    this.iterating = true;
    return {
      next: () => this.next(),
      // Leaving a `for await` loop (break, return, throw) unsubscribes.
      return: async () => {
        this.close();
        return { value: undefined, done: true };
      },
    };
  }

  async next() {
    for (;;) {
      if (this.buffer.length) return { value: this.buffer.shift(), done: false };
      if (this.error) throw this.error;
      if (this.closed) return { value: undefined, done: true };
      await new Promise((resolve) => (this.waiting = resolve));
    }
  }

  wake() {
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.();
  }

  emit(kind, value) {
    for (const handler of this.listeners[kind]) {
      try {
        handler(value);
      } catch (error) {
        // The application's error: reported, never allowed to break the subscription.
        if (kind !== "error") this.emit("error", error);
      }
    }
  }

  setState(state) {
    if (state === this.state && state !== "live") return;
    this.state = state;
    this.emit("state", {
      state,
      recovered: this.recovered,
      position: this.position,
      epoch: this.epoch,
      transport: this.transport,
    });
  }

  /** The stream's epoch as the hub states it: another one means seqs start over. */
  learnEpoch(epoch, recovered) {
    if (this.epoch !== undefined && epoch !== undefined && epoch !== this.epoch) this.position = 0;
    if (epoch !== undefined) this.epoch = epoch;
    if (recovered === false) this.recovered = false;
  }

  /** The hub's `subscribed`: its epoch, whether the resume is complete, and (live only)
   * the seq to resume after if the connection drops before any event. */
  subscribed({ epoch, recovered, lastSeq }) {
    this.learnEpoch(epoch, recovered);
    if (this.position === undefined && lastSeq !== undefined) this.position = lastSeq;
    this.setState("live");
  }

  /** Events an operator replayed (they repeat seqs): to `on("replay")`, nowhere else. */
  replayed(events) {
    for (const item of events) this.emit("replay", item);
  }

  deliver(events) {
    for (const item of events) {
      if (this.position !== undefined && item.seq <= this.position) continue;
      this.position = item.seq;
      if (this.iterating) this.buffer.push(item);
      this.emit("event", item);
    }
    this.wake();
  }

  fail(error) {
    this.error = error;
    this.emit("error", error);
    this.close();
  }

  async run() {
    let attempt = 0;
    let index = 0;
    let unauthorized = 0;
    while (!this.closed) {
      const transport = this.transports[index];
      this.transport = transport;
      let outcome;
      try {
        outcome = await TRANSPORT[transport](this);
      } catch (error) {
        outcome = { error };
      }
      if (this.closed) return;
      if (outcome.ended) return this.close();
      const error = outcome.error;
      if (error instanceof HubError && FATAL.has(error.code)) {
        // A new token from getToken may cure UNAUTHORIZED (a few times); nothing else can.
        unauthorized = error.code === "UNAUTHORIZED" ? unauthorized + 1 : unauthorized;
        if (error.code !== "UNAUTHORIZED" || !this.client.getToken || unauthorized > 3) {
          return this.fail(error);
        }
      }
      if (outcome.live) {
        attempt = 0;
        if (!error) unauthorized = 0;
      } else if (outcome.refused && index + 1 < this.transports.length) {
        index += 1; // this transport cannot be had here: the next one, at once
        continue;
      } else {
        index = 0;
      }
      this.setState("reconnecting");
      const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
      attempt += 1;
      await sleep(Math.random() * cap, this);
    }
  }

  subscribeFilters() {
    if (!this.types && !this.filter) return undefined;
    const filter = {};
    if (this.types) filter.eventTypes = this.types;
    if (this.filter) filter.expression = this.filter;
    return [filter];
  }

  query(extra = {}) {
    const params = new URLSearchParams(extra);
    if (this.types) params.set("types", this.types.join(","));
    if (this.filter) params.set("filter", this.filter);
    if (this.epoch !== undefined) params.set("epoch", this.epoch);
    return params;
  }
}

// -- transports: each resolves with how its connection ended --------------------------------
// {live}: it delivered (so reconnect with it); {refused}: it never opened (try the next);
// {ended}: the stream closed; {error}: a HubError.

const TRANSPORT = { websocket: viaWebSocket, sse: viaEventStream, polling: viaPolling };

async function viaWebSocket(sub) {
  const client = sub.client;
  const token = await client.token();
  const url = client.url.replace(/^http/, "ws") + "/ws";
  return new Promise((resolve) => {
    const ws = new client.WebSocket(url);
    let opened = false;
    let live = false;
    let settled = false;
    let refresh;
    const finish = (outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(refresh);
      sub.stopCurrent = undefined;
      try {
        ws.close();
      } catch {
        // already closed
      }
      resolve({ live, ...outcome });
    };
    sub.stopCurrent = () => finish({});
    const send = (message) => ws.send(JSON.stringify(message));
    const scheduleRefresh = (expiresAt) => {
      clearTimeout(refresh);
      if (!expiresAt || !client.getToken) return;
      const wait = Math.max(0, Date.parse(expiresAt) - Date.now() - REFRESH_BEFORE_MS);
      refresh = setTimeout(async () => send({ type: "auth", token: await client.token() }), wait);
    };
    ws.addEventListener("open", () => {
      opened = true;
      // A browser's WebSocket cannot send headers: the credential is the first message.
      if (token) send({ type: "auth", token });
    });
    ws.addEventListener("message", (message) => {
      const frame = JSON.parse(message.data);
      switch (frame.type) {
        case "connection_ack": {
          scheduleRefresh(frame.metadata.expiresAt);
          const request = { type: "subscribe", streamId: sub.stream, batch: true };
          const filters = sub.subscribeFilters();
          if (filters) request.filters = filters;
          if (sub.position !== undefined) {
            request.since = sub.position;
            if (sub.epoch !== undefined) request.epoch = sub.epoch;
          }
          send(request);
          break;
        }
        case "auth_ack":
          scheduleRefresh(frame.metadata.expiresAt);
          break;
        case "subscribed":
          live = true;
          sub.subscribed(frame.metadata);
          break;
        case "events":
          sub.deliver(frame.events);
          break;
        case "event":
          if (frame.metadata?.replay) sub.replayed([frame.event]);
          else sub.deliver([frame.event]);
          break;
        case "error":
          if (frame.error.code === "STREAM_CLOSED") finish({ ended: true });
          else finish({ error: new HubError(frame.error.code, frame.error.message, frame.error.details) });
          break;
      }
    });
    ws.addEventListener("close", (close) => {
      if (close.code === 4010) return finish({ ended: true });
      const code = CLOSE_CODES[close.code];
      if (code) return finish({ error: new HubError(code, close.reason || code) });
      finish({ refused: !opened });
    });
    ws.addEventListener("error", () => {
      if (!opened) finish({ refused: true });
    });
  });
}

async function viaEventStream(sub) {
  const client = sub.client;
  const controller = new AbortController();
  let live = false;
  sub.stopCurrent = () => controller.abort();
  try {
    const params = sub.query(sub.position !== undefined ? { since: String(sub.position) } : {});
    const response = await client.fetch(
      `${client.url}/api/streams/${encodeURIComponent(sub.stream)}/events?${params}`,
      { headers: await client.headers({ accept: "text/event-stream" }), signal: controller.signal },
    );
    if (response.status !== 200) return refusal(response);
    live = true;
    for await (const frame of sseFrames(response.body)) {
      if (frame.event === "stream_event") {
        sub.deliver([JSON.parse(frame.data)]);
      } else if (frame.event === "subscribed") {
        sub.subscribed(JSON.parse(frame.data)); // always first: epoch, recovered, lastSeq
      } else if (frame.event === "replay_event") {
        sub.replayed([JSON.parse(frame.data)]); // no id: it moves no position
      } else if (frame.event === "error") {
        const error = JSON.parse(frame.data);
        if (error.code === "STREAM_CLOSED") return { live, ended: true };
        return { live }; // TOKEN_EXPIRED, SLOW_CONSUMER, DISCONNECTED...: resume
      }
    }
    return { live };
  } catch (error) {
    return { live, refused: !live && !(error instanceof HubError), error: error instanceof HubError ? error : undefined };
  } finally {
    sub.stopCurrent = undefined;
  }
}

async function viaPolling(sub) {
  const client = sub.client;
  const controller = new AbortController();
  let live = false;
  let clientId;
  sub.stopCurrent = () => controller.abort();
  const path = `/api/streams/${encodeURIComponent(sub.stream)}`;
  try {
    let since = sub.position;
    if (since === undefined) {
      // Live only: from where the stream stands now.
      const response = await client.fetch(client.url + path, { headers: await client.headers(), signal: controller.signal });
      if (response.status !== 200) return refusal(response);
      const stream = await response.json();
      since = stream.lastSeq;
      sub.learnEpoch(stream.epoch);
    }
    while (!sub.closed) {
      // The first poll answers at once, so the subscription is live as soon as the hub
      // has registered it; then each poll waits for events.
      const wait = live ? POLL_TIMEOUT_S : 0;
      const params = sub.query({ since: String(since), timeout: String(wait) });
      if (clientId) params.set("clientId", clientId);
      const response = await client.fetch(`${client.url}${path}/poll?${params}`, {
        headers: await client.headers(),
        signal: controller.signal,
      });
      if (response.status !== 200) return live ? { live, error: (await refusal(response)).error } : refusal(response);
      const answer = await response.json();
      clientId = answer.clientId;
      sub.learnEpoch(answer.epoch, answer.recovered);
      if (!live) {
        live = true;
        sub.setState("live");
      }
      sub.deliver(answer.events);
      since = answer.lastSeq;
      if (answer.closed) return { live, ended: true };
    }
    return { live };
  } catch {
    return { live, refused: !live };
  } finally {
    sub.stopCurrent = undefined;
  }
}

// -- helpers ---------------------------------------------------------------------------------

async function answer(response) {
  if (response.status === 204) return undefined;
  const body = await response.json().catch(() => undefined);
  if (!response.ok) {
    const error = body?.error ?? { code: "HTTP_ERROR", message: response.statusText };
    throw new HubError(error.code, error.message, error.details ?? {}, response.status);
  }
  return body;
}

/** A transport's non-200 answer: fatal when it is the hub saying no, else try another. */
async function refusal(response) {
  const body = await response.json().catch(() => undefined);
  const error = body?.error;
  if (error && ([401, 403, 404].includes(response.status) || FATAL.has(error.code))) {
    return { live: false, error: new HubError(error.code, error.message, error.details ?? {}, response.status) };
  }
  return { live: false, refused: true };
}

/** Frames of a text/event-stream body, as the WHATWG spec parses them. */
async function* sseFrames(body) {
  const decoder = new TextDecoder();
  const reader = body.getReader(); // not `for await`: Safari's streams are not iterable
  let pending = "";
  let frame = { event: "message", data: [] };
  for (;;) {
    const { value: chunk, done } = await reader.read();
    if (done) return;
    pending += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = pending.search(/\r\n|\r|\n/)) >= 0) {
      const line = pending.slice(0, end);
      pending = pending.slice(end + (pending.startsWith("\r\n", end) ? 2 : 1));
      if (line === "") {
        if (frame.data.length) yield { event: frame.event, data: frame.data.join("\n") };
        frame = { event: "message", data: [] };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "event") frame.event = value;
      else if (name === "data") frame.data.push(value);
    }
  }
}

function event(type, data, metadata) {
  const clean = Object.fromEntries(Object.entries(data).filter(([, v]) => v !== undefined));
  return metadata === undefined ? { type, data: clean } : { type, data: clean, metadata };
}

function base64(bytes) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let text = "";
  for (let i = 0; i < view.length; i += 0x8000) text += String.fromCharCode(...view.subarray(i, i + 0x8000));
  return btoa(text);
}

function sleep(ms, sub) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    sub.stopCurrent = () => {
      clearTimeout(timer);
      resolve();
    };
  });
}

function stampOf(moment) {
  return moment instanceof Date ? moment.toISOString() : String(moment);
}

function rangeParams(startTime, endTime) {
  const params = new URLSearchParams();
  if (startTime) params.set("startTime", stampOf(startTime));
  if (endTime) params.set("endTime", stampOf(endTime));
  return params;
}
