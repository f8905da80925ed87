/**
 * Type declarations of the realtime browser client (static/realtime.js, static/realtime.mjs).
 *
 * As an ES module:   import RealtimeClient, { type RealtimeEvent } from "realtime-push-client";
 * As a <script>:     window.RealtimeClient (declared below once this file is referenced).
 *
 * docs/CLIENT.md describes the behaviour; docs/PROTOCOL.md the messages.
 */

/** Where a subscriber stands on a channel: the last delivered event's epoch and offset. */
export interface Position {
  epoch: string;
  offset: number;
}

/** A published event, as delivered to onEvent and inside onState. */
export interface RealtimeEvent<T = unknown> {
  op: "event";
  channel: string;
  offset: number;
  type: string;
  data: T;
}

/** What the client reports through "error" and onError. */
export interface RealtimeError {
  /** A server error code (bad_request, unauthorized, token_expired, forbidden, unknown_channel,
   * too_many_subscriptions, rate_limited) or one of the client's own (policy_violation,
   * token_unavailable, bad_url). */
  code: string;
  message: string;
  channel?: string | null;
  closeCode?: number;
}

export type ConnectionState = "connecting" | "connected" | "disconnected" | "closed";
export type SubscriptionStatus = "pending" | "sent" | "live" | "closed" | "failed";
export type Transport = "websocket" | "sse";

export interface DisconnectInfo {
  code: number;
  reason: string;
  reconnect: boolean;
  delay?: number;
}

/** The argument each client event's listeners receive. */
export interface ClientEventMap {
  connected: { session: string | null; user: string | null };
  disconnected: DisconnectInfo;
  state: ConnectionState;
  error: RealtimeError;
  unsubscribed: { channel: string; reason: string };
  transport: Transport;
}

export interface SubscribeHandlers<T = unknown> {
  /** The channel's state (its latest `state: true` event, or null): first subscribe, resyncs. */
  onState?: (this: Subscription<T>, event: RealtimeEvent<T> | null) => void;
  /** Each event, in increasing offset order, never twice. */
  onEvent?: (this: Subscription<T>, event: RealtimeEvent<T>) => void;
  /** The server refused the subscription; it is over. */
  onError?: (this: Subscription<T>, error: RealtimeError) => void;
  /** The server dropped the subscription unasked. */
  onUnsubscribed?: (this: Subscription<T>, reason: string) => void;
  /** Recover from this position (e.g. rendered with the page). */
  since?: Position | null;
}

export interface RealtimeOptions {
  /** A connection JWT. */
  token?: string | null;
  /** Called when there is no token, when it is about to expire, and when the server says it did. */
  getToken?: () => string | Promise<string>;
  minDelay?: number;
  maxDelay?: number;
  stableAfter?: number;
  restartDelay?: number;
  connectTimeout?: number;
  tokenSkew?: number;
  /** In order of preference; default ["websocket", "sse"]. ["sse"] uses only the event stream. */
  transports?: Transport[];
  /** The event-stream URL; default: the WebSocket URL with /ws replaced by /sse. */
  sseUrl?: string | null;
  /** WebSocket attempts failing before "welcome" before the client tries SSE (default 2). */
  fallbackAfter?: number;
  /** On SSE, try the WebSocket again after this many ms (doubling up to 10 minutes). */
  upgradeDelay?: number;
  WebSocket?: typeof WebSocket | null;
  EventSource?: typeof EventSource | null;
  debug?: boolean;
}

/** One channel subscription; made by RealtimeClient#subscribe. */
export declare class Subscription<T = unknown> {
  private constructor();
  readonly client: RealtimeClient;
  readonly channel: string;
  readonly epoch: string | null;
  readonly offset: number;
  readonly status: SubscriptionStatus;
  readonly error: RealtimeError | null;
  /** The last delivered position, or null before the first sync. */
  readonly position: Position | null;
  readonly active: boolean;
  /** Stop receiving this channel's events (idempotent). */
  unsubscribe(): void;
}

/** A connection to the realtime server that survives disconnects. */
export declare class RealtimeClient {
  /**
   * @param url ws:// or wss:// URL, or a path such as "/ws" (the page's host); default "/ws".
   */
  constructor(url?: string, options?: RealtimeOptions);
  static readonly version: string;
  static readonly Subscription: typeof Subscription;
  readonly url: string;
  readonly sseUrl: string;
  readonly options: Readonly<Required<Omit<RealtimeOptions, "token" | "getToken">>> &
    Pick<RealtimeOptions, "token" | "getToken">;
  readonly state: ConnectionState;
  /** The transport in use now. */
  readonly transport: Transport;
  /** ms to add to Date.now() to get the server's clock. */
  readonly serverTimeOffset: number;
  readonly session: string | null;
  readonly user: string | null;
  /** Listen to a client event; returns a function that removes the listener. */
  on<K extends keyof ClientEventMap>(
    name: K,
    listener: (this: RealtimeClient, detail: ClientEventMap[K]) => void,
  ): () => void;
  off<K extends keyof ClientEventMap>(
    name: K,
    listener: (this: RealtimeClient, detail: ClientEventMap[K]) => void,
  ): void;
  /** Subscribe to a channel (one subscription per channel at a time). */
  subscribe<T = unknown>(channel: string, handlers?: SubscribeHandlers<T>): Subscription<T>;
  subscription(channel: string): Subscription | null;
  /** The server's clock in ms since the epoch. */
  now(): number;
  setToken(token: string | null): void;
  /** Connect again after close() or after the client stopped on an error. */
  connect(): void;
  /** Close cleanly and stop reconnecting. */
  close(): void;
}

export default RealtimeClient;

declare global {
  interface Window {
    RealtimeClient: typeof RealtimeClient;
  }
}
