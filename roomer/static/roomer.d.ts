/**
 * roomer.js: the browser client of roomer (room-based real-time messaging over
 * WebSockets). Served by every roomer server at `/roomer.js`, with these types at
 * `/roomer.d.ts`.
 *
 * ```js
 * import roomer from "/roomer.js";
 * const root = roomer();                        // ws(s)://<page host>/ws
 * const lobby = await root.joined("lobby");     // rejects with RoomerError (.code)
 * lobby.onText("chat", (text, senderId) => console.log(senderId, text));
 * lobby.send("chat", "hello");
 * ```
 */

/** What a message may carry. Strings are sent as UTF-8; ArrayBuffer and typed arrays as
 * their bytes; `null`/`undefined` as an empty payload; numbers and booleans as text;
 * other objects as JSON. Received payloads are always a `Uint8Array`. */
export type Payload =
  | string
  | ArrayBuffer
  | ArrayBufferView
  | number
  | boolean
  | object
  | null
  | undefined;

/** The body of the server's `error` message (roomer protocol, DESIGN §3). */
export interface ServerError {
  /** `malformed`, `invalid_name`, `join_denied`, `leave_denied`, `too_many_rooms`,
   * `reserved_event`, `no_such_client`, `handler_error`, `forbidden`, `not_member`,
   * `rate_limited`; or `invalid_json`, raised here by `onJSON` for a payload that is not
   * JSON. */
  code: string;
  /** A human-readable explanation (a join hook's `Deny` text, for instance). */
  message: string;
  /** The event of the message that caused it (`""` when unknown). */
  event: string;
}

/** A message that was not sent: the `dropped` event's argument. */
export interface Dropped {
  room: string;
  event: string;
  payload: Uint8Array;
  dst: string;
  /** `queue_full`: sent while disconnected with the queue at `sendQueueLimit`;
   * `closed`: its room or the connection closed for good before it could go. */
  reason: "queue_full" | "closed";
}

/** A refusal by the server (`code` is its error code: `join_denied`,
 * `too_many_rooms`, `invalid_name`, `rate_limited`...) or `closed` (the room or the
 * connection closed for good first). */
export class RoomerError extends Error {
  readonly name: "RoomerError";
  readonly code: string;
  /** The server's message without the code. */
  readonly serverMessage: string;
  /** The event that was refused (`join` for a refused join). */
  readonly event: string;
  /** The room concerned. */
  readonly room: string;
  constructor(code: string, message: string, event?: string, room?: string);
}

/** Reconnection after a connection is lost. Each attempt waits
 * `min(maxDelay, initialDelay * factor ** n)` milliseconds, shortened by a random part of
 * up to `jitter` of it (so clients dropped together do not come back together); `n`
 * restarts at 0 once connected. */
export interface ReconnectOptions {
  /** First delay in ms. Default 500. */
  initialDelay?: number;
  /** Longest delay in ms. Default 10000. */
  maxDelay?: number;
  /** Growth per attempt. Default 2. */
  factor?: number;
  /** Random part of each delay, 0 to 1. Default 0.5. */
  jitter?: number;
  /** Attempts before giving up (then every room closes). Default Infinity. */
  maxAttempts?: number;
  /** Whether a close should be followed by reconnection. Default: every close but
   * 1000 (the server closed normally) and 1008 (policy: kicked, or refused by an
   * `on_connect` hook), except roomer's 1008 for a client that fell behind (reason
   * `slow consumer...` or `write timeout`), which is retried. The client's own `close()`
   * never reconnects. */
  shouldReconnect?(code: number, reason: string): boolean;
}

export interface RoomerOptions {
  /** `true` (default), `false` (a lost connection closes every room), or settings. */
  reconnect?: boolean | ReconnectOptions;
  /** Messages kept while disconnected, sent in order once connected again; past it a
   * send fires `dropped` (`queue_full`). Default 256. */
  sendQueueLimit?: number;
  /** Milliseconds a connection attempt may take (until the server announced this
   * client's id) before it is dropped and retried. Default 10000; 0 for no limit. */
  connectTimeout?: number;
  /** The WebSocket constructor (default `globalThis.WebSocket`). */
  WebSocket?: typeof WebSocket;
}

/** A room of this connection. `roomer()` returns the root room ("root"), which every
 * client is in; `join()` gives the others. Rooms are frozen objects. */
export interface Room {
  /** The room's name. */
  readonly name: string;

  /** This client's id (a UUID); a new one after every reconnection. `""` before the
   * first connection. */
  id(): string;
  /** True while the room is joined and the connection up. */
  open(): boolean;
  /** A copy of the member ids, this client included (root lists only this client
   * unless the server has root presence on). */
  members(): string[];

  /** Join a room; returns its Room at once. Joins made before the connection is up are
   * sent once it is. The same Room is returned while it is not closed. */
  join(name: string): Room;
  /** Join a room and wait for the server: resolves with the open Room, rejects with a
   * RoomerError (`join_denied`, `too_many_rooms`, `invalid_name`...). */
  joined(name: string): Promise<Room>;
  /** Resolves with this Room once it is open (root: connected; others: joined); at once
   * if it is; through reconnections; rejects with RoomerError if it closes first. */
  ready(): Promise<Room>;
  /** Leave this room (`close` fires when the server confirms; its handlers are then
   * removed). On root: close the connection. */
  leave(): Room;
  /** Close the connection and every room, without reconnection. */
  close(): Room;
  /** Leave every room but root. */
  purge(): Room;
  /** This connection's rooms by name, root included. */
  rooms(): Readonly<Record<string, Room>>;

  /** Send `event` to the room's other members, or with `dst` (a client id) to that client
   * only. While disconnected it waits in a queue (see `sendQueueLimit`); what cannot be
   * sent fires `dropped`. Reserved names (`join`, `leave`, `join_ack`, `leave_ack`,
   * `new_member`, `member_left`, `error`, `open`, `close`, `reconnecting`,
   * `reconnected`, `dropped`) throw a TypeError. */
  send(event: string, payload?: Payload, dst?: string): Room;
  /** `send(event, JSON.stringify(value), dst)`. */
  sendJSON(event: string, value: unknown, dst?: string): Room;

  /** The room is open: its first join_ack (root: the connection's first). Fires once. */
  on(event: "open", fn: () => void): Room;
  /** The room closed for good: left, or the connection closed without reconnection. */
  on(event: "close", fn: () => void): Room;
  /** Another client joined (also after a reconnection, for members that arrived while
   * away). */
  on(event: "new_member", fn: (memberId: string) => void): Room;
  /** A client left (also after a reconnection, for members gone while away). */
  on(event: "member_left", fn: (memberId: string) => void): Room;
  /** The server refused something this client sent in this room (root also gets the
   * errors of rooms with no `error` handler). */
  on(event: "error", fn: (error: ServerError) => void): Room;
  /** The connection was lost (or the last attempt failed; `closed` is its close code and
   * reason, 1006 for a failure to connect); attempt `attempt` starts in `delayMs` ms.
   * Fires in every room of the connection. */
  on(event: "reconnecting",
     fn: (attempt: number, delayMs: number, closed: { code: number; reason: string }) => void,
  ): Room;
  /** Connected again (root: `id` is the new id, `previousId` the old one) or joined
   * again (a room: its members() are up to date). */
  on(event: "reconnected", fn: (id: string, previousId: string) => void): Room;
  /** A message could not be sent (see Dropped). Fires in its room, else in root. */
  on(event: "dropped", fn: (dropped: Dropped) => void): Room;
  /** A custom event from another client (or the server: `senderId` is then `""`). */
  on(event: string, fn: (payload: Uint8Array, senderId: string) => void): Room;
  /** Like `on`, for the next occurrence only. */
  once(event: string, fn: (...args: any[]) => void): Room;
  /** Remove a handler; without `fn` every handler of `event`; without arguments, all. */
  off(event?: string, fn?: (...args: any[]) => void): Room;
  /** A custom event with its payload parsed as JSON (a payload that is not JSON fires
   * `error` with code `invalid_json`). */
  onJSON<T = unknown>(event: string, fn: (value: T, senderId: string) => void): Room;
  /** A custom event with its payload decoded as UTF-8 text. */
  onText(event: string, fn: (text: string, senderId: string) => void): Room;
  /** Call this room's handlers of `event` locally (nothing is sent). */
  emit(event: string, ...args: any[]): boolean;
  /** The handlers of `event` (of every event without it). */
  listeners(event?: string): Function[];
  addListener(event: string, fn: (...args: any[]) => void): Room;
  removeListener(event: string, fn: (...args: any[]) => void): Room;
  removeAllListeners(event?: string): Room;
  /** Remove every handler except those of the events listed. */
  clearListeners(exceptions?: string[]): Room;
}

/** Connect to a roomer server and return the root room. `url` defaults to `/ws` on the
 * page's host; `http(s)://` and relative URLs are turned into `ws(s)://`. */
export function roomer(url?: string | URL, options?: RoomerOptions): Room;

/** A received payload decoded as UTF-8 text. */
export function text(payload: Uint8Array): string;

export default roomer;
