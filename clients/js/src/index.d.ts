// Types of @executor-streamer/client (src/index.js). Event shapes follow the hub's
// docs/protocol.md; EVENT_TYPES is checked against the hub's JSON Schema in the tests.

export declare const EVENT_TYPES: readonly [
  "REASONING",
  "COMMAND_STARTED",
  "COMMAND_COMPLETED",
  "COMMAND_FAILED",
  "SCREENSHOT",
  "VARIABLE_UPDATE",
  "STATUS",
  "ERROR",
];
export type EventType = (typeof EVENT_TYPES)[number];

export declare const TRANSPORTS: readonly ["websocket", "sse", "polling"];
export type Transport = (typeof TRANSPORTS)[number];

export interface PublishOptions {
  /** Sent again within 5 minutes, the same key stores nothing and returns the first result. */
  idempotencyKey?: string;
}

export interface StreamEvent {
  id: string;
  streamId: string;
  sessionId: string;
  seq: number;
  type: EventType;
  timestamp: string;
  data: Record<string, unknown>;
  metadata?: Record<string, unknown>;
}

export interface EventInput {
  type: EventType;
  data: Record<string, unknown>;
  metadata?: Record<string, unknown>;
}

export interface ErrorContext {
  code: string;
  message: string;
  details?: Record<string, unknown>;
  stack?: string;
  recoverable?: boolean;
  commandName?: string;
}

export type State = "connecting" | "live" | "reconnecting" | "closed";

export interface StateChange {
  state: State;
  /** False once the hub said it no longer holds everything asked for: reload. */
  recovered: boolean;
  position: number | undefined;
  epoch: string | undefined;
  transport: Transport | undefined;
}

export declare class HubError extends Error {
  readonly code: string;
  readonly details: Record<string, unknown>;
  readonly status: number | undefined;
  constructor(code: string, message: string, details?: Record<string, unknown>, status?: number);
}

export interface ClientOptions {
  /** The hub's base URL, e.g. "http://localhost:3001". */
  url: string;
  /** Called for every connection and request, and before a WebSocket's credential expires. */
  getToken?: () => string | undefined | Promise<string | undefined>;
  /** In the order to try them. */
  transports?: readonly Transport[];
  /** Defaults to globalThis.WebSocket (Node 20: run with --experimental-websocket). */
  WebSocket?: typeof globalThis.WebSocket;
  fetch?: typeof globalThis.fetch;
}

export interface SubscribeOptions {
  types?: readonly EventType[];
  /**
   * A CEL expression over each event, ANDed with `types` (docs/expressions.md), e.g.
   * `type == "COMMAND_FAILED" && data.error.code == "TIMEOUT"`. One that does not compile
   * ends the subscription with a HubError `INVALID_FILTER` (its `details` say where).
   */
  filter?: string;
  /** Resume after this seq; without it, live events only. */
  since?: number;
  transports?: readonly Transport[];
}

export declare class Subscription implements AsyncIterable<StreamEvent> {
  readonly stream: string;
  /** The last seq handed to the application: where a reconnect resumes from. */
  readonly position: number | undefined;
  readonly epoch: string | undefined;
  readonly recovered: boolean;
  readonly state: State;
  readonly transport: Transport | undefined;
  /** The HubError that ended the subscription, if one did. */
  readonly error: HubError | undefined;
  on(kind: "event", handler: (event: StreamEvent) => void): () => void;
  on(kind: "state", handler: (change: StateChange) => void): () => void;
  on(kind: "error", handler: (error: unknown) => void): () => void;
  /** Events an operator replayed to this client (`POST /api/streams/{id}/replay/{clientId}`):
   * they repeat seqs, so they never enter the iteration or `on("event")`, nor move `position`. */
  on(kind: "replay", handler: (event: StreamEvent) => void): () => void;
  /** Unsubscribe; iterations end. Leaving a `for await` loop does it too. */
  close(): void;
  [Symbol.asyncIterator](): AsyncIterator<StreamEvent>;
}

export interface RunAnalytics {
  runs: { total: number; running: number; completed: number; failed: number; cancelled: number; closed: number };
  series: { start: string; started: number; completed: number; failed: number }[];
  failingCommands: { commandName: string; errorCode: string; count: number; lastStreamId: string; lastSessionId: string }[];
  actions: { action: string; count: number; failures: number; p50Ms: number | null; p95Ms: number | null }[];
  slowestRuns: { streamId: string; workflowSessionId: string; durationMs: number }[];
}

export type WidgetFigure =
  | { title: string; kind: "counter"; value: number }
  | { title: string; kind: "timeseries"; series: { start: string; value: number }[] }
  | { title: string; kind: "table" | "top"; rows: { key: string; count: number }[] };

export interface SearchOptions {
  /** Only events at or after this moment. */
  startTime?: Date | string;
  /** Only events at or before this moment. */
  endTime?: Date | string;
  /** Only runs whose workflow session id matches: `wf-1`, `team-a:*` or `*`. */
  streams?: string;
  /** Events per request (1-1000; default 100). */
  pageSize?: number;
  /** Stop after this many events. */
  limit?: number;
}

export interface Extra {
  metadata?: Record<string, unknown>;
}

export declare class Client {
  constructor(options: ClientOptions);
  readonly url: string;
  subscribe(stream: string, options?: SubscribeOptions): Subscription;
  /** Events across runs that match, newest first, page after page (`GET /api/search`). */
  search(filter?: string, options?: SearchOptions): AsyncGenerator<StreamEvent, void, undefined>;
  /** Run outcomes, runs over time, failing commands, action durations, slowest runs. */
  runAnalytics(options?: { startTime?: Date | string; endTime?: Date | string; streams?: string; bucket?: "hour" | "day" }): Promise<RunAnalytics>;
  /** One configured dashboard widget's figure. */
  widget(index: number, options?: { startTime?: Date | string; endTime?: Date | string }): Promise<WidgetFigure>;
  publish(stream: string, event: EventInput, options?: PublishOptions): Promise<StreamEvent>;
  publish(stream: string, events: EventInput[], options?: PublishOptions): Promise<StreamEvent[]>;
  publishReasoning(stream: string, thought: string, confidence: number, reasoningType: string, extra?: Extra & { context?: Record<string, unknown> }): Promise<StreamEvent>;
  publishCommandStarted(stream: string, commandName: string, action: string, extra?: Extra & { parameters?: Record<string, unknown>; commandId?: string }): Promise<StreamEvent>;
  publishCommandCompleted(stream: string, commandName: string, result: unknown, duration: number, extra?: Extra & { commandId?: string }): Promise<StreamEvent>;
  publishCommandFailed(stream: string, commandName: string, error: ErrorContext, duration: number, extra?: Extra & { commandId?: string }): Promise<StreamEvent>;
  publishVariableUpdate(stream: string, name: string, value: string, extra?: Extra & { previousValue?: string }): Promise<StreamEvent>;
  publishStatus(stream: string, statusType: string, status: string, extra?: Extra & { message?: string }): Promise<StreamEvent>;
  publishError(stream: string, error: ErrorContext, extra?: Extra): Promise<StreamEvent>;
  publishScreenshot(stream: string, image: string | Uint8Array | ArrayBuffer, extra?: Extra & { mimeType?: string; width?: number; height?: number; caption?: string; commandId?: string; pageUrl?: string }): Promise<StreamEvent>;
  /** Close every subscription. */
  close(): void;
}

export declare function createClient(options: ClientOptions): Client;
