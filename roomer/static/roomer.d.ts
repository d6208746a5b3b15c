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
 *
 * Protocol v2 (docs/protocol.md), offered with `{protocol: "v2"}`, adds namespaces and
 * asks (request/response) both ways:
 *
 * ```js
 * const root = roomer("/ws", { protocol: "v2" });
 * const chat = await root.namespace("chat");     // rejects with RoomerError (.code)
 * const lobby = await chat.joined("lobby");      // "lobby" of namespace "chat"
 * const reply = await lobby.ask("roll", "d6", { timeout: 2000 });   // a Uint8Array
 * lobby.onAsk("ping", (payload, senderId) => "pong");  // the server asks, this answers
 * ```
 *
 * Game rooms (v2, docs/protocol.md §10): find a seat in one round trip, watch the list.
 *
 * ```js
 * const table = await root.joinOrCreate("table", { mode: "duel" });  // a Room
 * table.on("room.closed", ({ code, message }) => console.log(code, message));
 * const list = await root.watchRooms("table", { filter: { mode: "duel" } });
 * list.on("change", () => render(list.rooms()));
 * ```
 *
 * Sessions (docs/protocol.md §11, the `resume` option, on by default): a connection that
 * drops comes back with the same id and rooms, and gets every message it missed once, in
 * order; in a page, so does a reload while the connection was down.
 *
 * ```js
 * root.on("resumed", (id) => console.log("still", id));       // nothing was missed
 * root.on("lost", (code) => console.log("a new session:", code)); // reconnected follows
 * lobby.on("member_dropped", (id) => markAway(id));            // held by the server
 * lobby.on("member_back", (id) => markBack(id));
 * ```
 *
 * The same file is the npm package `roomer` (`import roomer from "roomer"`), which runs in
 * Node.js too: 22 and later have a WebSocket of their own; before 22 pass one with the
 * `WebSocket` option (`roomer("ws://host:8080/ws", { WebSocket })` with
 * `import WebSocket from "ws"`). Outside a page the URL must be whole.
 */

/** What a message may carry. Strings are sent as UTF-8; ArrayBuffer and typed arrays as
 * their bytes; `null`/`undefined` as an empty payload; numbers and booleans as text;
 * plain objects and arrays as JSON (see JSONPayload). Received payloads are always a
 * `Uint8Array`. Anything else (a function, a symbol, a bigint, a Map...) throws a
 * TypeError. */
export type Payload =
  | string
  | ArrayBuffer
  | ArrayBufferView
  | number
  | boolean
  | JSONPayload
  | null
  | undefined;

/** An object sent as JSON: a plain object or an array, or any object with a `toJSON()`
 * method (a Date, say). One that JSON would turn into `{}` without a word, here or nested
 * (a Map, a Set, a Blob, an instance of a class without `toJSON()`), throws a TypeError
 * when sent. The type refuses functions, the built-in objects that carry a
 * `Symbol.toStringTag` (Map, Set, WeakMap, Promise...) and those with an `arrayBuffer()`
 * method (Blob, File, Response: send `await blob.arrayBuffer()`); an instance of a class
 * of your own passes it but not the check at run time. */
export type JSONPayload =
  | { readonly [key: string]: unknown }
  | (object & {
      readonly [Symbol.toStringTag]?: never;
      readonly call?: never;
      readonly apply?: never;
      readonly bind?: never;
      readonly arrayBuffer?: never;
    });

/** The body of the server's `error` message (roomer protocol, docs/protocol.md §9). */
export interface ServerError {
  /** `malformed`, `invalid_name`, `join_denied`, `leave_denied`, `too_many_rooms`,
   * `reserved_event`, `no_such_client`, `handler_error`, `forbidden`, `not_member`,
   * `rate_limited`; v2 also `not_connected`, `no_such_namespace`, `namespace_denied`
   * (a refused namespace connect, `event` `connect`); or `invalid_json`, raised here by
   * `onJSON` for a payload that is not JSON. */
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

/** A game room as a room list shows it (`RoomWatch.rooms()`). */
export interface RoomEntry {
  /** The room's id (`type:suffix`): join it with `join(id, options)`. */
  id: string;
  type: string;
  /** Seats joined and being joined. */
  clients: number;
  /** Seats (`null`: no limit). */
  max_clients: number | null;
  /** Whether it takes no new player (locked by the room, or full). */
  locked: boolean;
  /** What the room set with `set_metadata`. */
  metadata: Record<string, unknown>;
}

/** Why a game room ended under its members: the `room.closed` event's argument. */
export interface RoomClosed {
  /** `closed` (the room closed itself), `owner_lost` (its server died or lost the
   * cluster), `shutdown` (its server is shutting down). */
  code: string;
  message: string;
}

/** A live list of the game rooms of one type (`room.watchRooms(type)`); it is kept up to
 * date at most a few times a second, and again after a reconnection. */
export interface RoomWatch {
  readonly type: string;
  /** The rooms listed now (private and unlisted rooms never are). */
  rooms(): RoomEntry[];
  /** One listed room by id. */
  room(id: string): RoomEntry | undefined;
  /** After each update (the list holds it already): rooms added or changed, ids
   * removed. */
  on(event: "change", fn: (update: { changed: RoomEntry[]; removed: string[] }) => void,
  ): RoomWatch;
  off(event: "change", fn?: (...args: any[]) => void): RoomWatch;
  /** Stop watching. */
  close(): void;
}

/** A refusal by the server (`code` is its error code: `join_denied`,
 * `too_many_rooms`, `invalid_name`, `rate_limited`, and in v2 the codes of error replies:
 * `no_handler`, `no_such_namespace`, `namespace_denied`, `not_connected`, or whatever
 * code a handler's `roomer.RoomerError` carries; for game rooms `room_full`,
 * `room_locked`, `no_such_room`, `no_such_room_type`, `create_denied`, `room_exists`,
 * `room_limit`, `room_unavailable`, `invalid_options`, `too_many_watches`, `room_busy`,
 * and a room closed under its members rejects with `closed`, `owner_lost` or
 * `shutdown`), or one of this client's: `closed` (the
 * room or the connection closed for good first), and for asks `timeout` (no answer in
 * time), `disconnected` (the connection was lost before the answer), `queue_full`;
 * `unsupported_protocol` (v2 was asked for and the server accepted another).
 *
 * Thrown (or rejected) from an `onAsk` handler, it is the error reply's code and
 * message. */
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
  /** `"v1"` (default: the original roomer protocol, no subprotocol offered) or `"v2"`
   * (offers the `roomer.v2.batch` and `roomer.v2` subprotocols: namespaces and asks,
   * and batch frames where the server names `roomer.v2.batch`: it may then bring several
   * messages in one WebSocket message, one `onmessage` for what it flushed at once, each
   * handled and counted as if it came alone). A browser fails the handshake of a server
   * that accepts neither (it is retried as any failed connection); one that accepts
   * another subprotocol closes every room with `unsupported_protocol`. */
  protocol?: "v1" | "v2";
  /** `true` (default), `false` (a lost connection closes every room), or settings. */
  reconnect?: boolean | ReconnectOptions;
  /** Resumable sessions (docs/protocol.md §11). Default: `true` when `reconnect` is on.
   * The client asks for a session (`session=new` in the URL's query) and acknowledges
   * what it receives; after a drop (a close that was not this client's `close()`) it
   * reconnects with the session's token: if the server still holds the session the
   * client keeps its id and rooms (nothing is joined again), gets every message it
   * missed, once and in order, then sends what it queued meanwhile, and fires `resumed`;
   * otherwise it fires `lost` and reconnects as without sessions (new id, rooms joined
   * again, `reconnected`). In a page the token, the count of messages received and the
   * rooms are kept in `sessionStorage` (key `roomer.session <ws URL>`), so a page
   * reloaded while its connection was down resumes too (one reloaded while connected
   * closed its socket as it unloaded, which ends the session: it gets `lost`). A server
   * with sessions off (`resume_window` 0) is unaffected. */
  resume?: boolean;
  /** Write what this client sends (sends, asks, replies, joins, acks: everything, in
   * order) once per animation frame, as one batch frame (docs/protocol.md §13): at the
   * next `requestAnimationFrame`, or 16 ms later where none comes (outside a page; in a
   * hidden page messages go out at once), or at once when 256 messages or 64 KiB are
   * waiting; `close()` writes what waits first, and what a dropped connection had not
   * written yet is queued as a send made while disconnected. One message waiting goes as
   * itself. For a client that sends several messages a frame (a game's inputs): fewer
   * frames for the server to read (each message still counts against its rate limit),
   * for up to one frame (~16 ms) of latency. Needs `protocol: "v2"` and a server that
   * names `roomer.v2.batch`; elsewhere (v1, an older server) it does nothing and each
   * message goes out alone. Default `false`. */
  coalesce?: boolean;
  /** Messages kept while disconnected, sent in order once connected again; past it a
   * send fires `dropped` (`queue_full`). Default 256. */
  sendQueueLimit?: number;
  /** Messages per second at which the queue is sent once connected again (the first
   * second's worth at once; sends made meanwhile wait behind it, in order): the server's
   * rate limit (200 frames/s by default) would drop the tail of a queue sent in one go.
   * Default 100; 0 sends it all at once. */
  flushRate?: number;
  /** Milliseconds a connection attempt may take (until the server announced this
   * client's id) before it is dropped and retried. Default 10000; 0 for no limit. */
  connectTimeout?: number;
  /** The WebSocket constructor (default `globalThis.WebSocket`): in Node.js before 22,
   * which has none, the `ws` package's (`import WebSocket from "ws"`). Without one
   * `roomer()` throws a TypeError saying so. */
  WebSocket?: WebSocketConstructor;
}

/** What roomer needs of a WebSocket: the browser's, Node.js 22's, or the `ws` package's
 * (any class built as `new WebSocket(url, protocols)`, with `binaryType`
 * `"arraybuffer"`, `onopen`, `onmessage`, `onerror`, `onclose`, `send` and `close`). */
export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[]): WebSocketLike;
}

/** The members of a WebSocket that roomer uses. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly protocol: string;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** The close that ended a connection: the third argument of `reconnecting`. */
export interface CloseInfo {
  /** The WebSocket close code (1006 for a connection that failed or never opened). */
  code: number;
  reason: string;
}

/** The events a room emits of its own, with their handlers. Every other event name is a
 * custom event: `(payload: Uint8Array, senderId: string)`. */
export interface RoomEvents {
  /** The room is open: its first join_ack (root: the connection's first). Fires once. */
  open: () => void;
  /** The room closed for good: left, or the connection closed without reconnection. */
  close: () => void;
  /** Another client joined (also after a reconnection, for members that arrived while
   * away). */
  new_member: (memberId: string) => void;
  /** A client left (also after a reconnection, for members gone while away). */
  member_left: (memberId: string) => void;
  /** v2: a member's connection dropped and the server holds its session (it stays a
   * member, in `members()`): `member_back` if it resumes, else `member_left` when its
   * window ends. */
  member_dropped: (memberId: string) => void;
  /** v2: a member whose connection dropped resumed its session. */
  member_back: (memberId: string) => void;
  /** The server refused something this client sent in this room (root also gets the
   * errors of rooms with no `error` handler). */
  error: (error: ServerError) => void;
  /** The connection was lost (or the last attempt failed; `closed` is its close code and
   * reason, 1006 for a failure to connect); attempt `attempt` starts in `delayMs` ms.
   * Fires in every room of the connection. */
  reconnecting: (attempt: number, delayMs: number, closed: CloseInfo) => void;
  /** Connected again (root) or joined again (a room: its members() are up to date):
   * `id` is this client's new id, `previousId` the one it had before (in a room: when
   * the room was last open). */
  reconnected: (id: string, previousId: string) => void;
  /** A message could not be sent (see Dropped). Fires in its room, else in root. */
  dropped: (dropped: Dropped) => void;
  /** The connection came back into its session (`resume`): `id` is this client's id,
   * the same as before; the rooms stayed joined (no `reconnected`), the messages missed
   * meanwhile follow, and what was queued is sent. Fires in every room of the
   * connection; a reloaded page that resumed fires `open` in root first. */
  resumed: (id: string) => void;
  /** The server could not resume the session (`code` `resume_failed`: expired, or a
   * message it had to forget; `message` says why): a new session follows, as a
   * reconnection without sessions (a new id, `reconnected`). Fires in every room. */
  lost: (code: string, message: string) => void;
}

/** A custom event's name: any string but the names of RoomEvents (whose handlers take
 * other arguments). */
export type CustomEvent<E extends string> = E extends keyof RoomEvents ? never : E;

/** The handler of a custom event: its payload and the sender's id (`""`: the server). */
export type MessageHandler = (payload: Uint8Array, senderId: string) => void;

/** Options of `ask()`. */
export interface AskOptions {
  /** Milliseconds to wait for the answer before rejecting with code `timeout`. Default
   * 5000; 0 (or Infinity) for no limit. */
  timeout?: number;
}

/** What an `onAsk` handler returns (or its promise resolves to): the reply's payload,
 * converted as `send()` converts payloads. */
export type AskAnswer = Payload | Promise<Payload>;

/** A room of this connection. `roomer()` returns the root room ("root"), which every
 * client is in; `join()` gives the others. Rooms are frozen objects. With protocol v2 a
 * room is in a namespace: `root.namespace(name)` gives that namespace's root room, and
 * its `join()` joins rooms of that namespace. */
export interface Room {
  /** The room's name. */
  readonly name: string;
  /** The room's namespace: `""` (the default one, all that v1 has) or a name given to
   * `namespace()`. */
  readonly namespaceName: string;

  /** This client's id (a UUID); a new one after every reconnection, the same after a
   * resumed session (and a reload that resumed). `""` before the first connection. */
  id(): string;
  /** True while the room is joined and the connection up. */
  open(): boolean;
  /** A copy of the member ids, this client included (root lists only this client
   * unless the server has root presence on). */
  members(): string[];

  /** Join a room (in this room's namespace); returns its Room at once. Joins made before
   * the connection is up are sent once it is. The same Room is returned while it is not
   * closed. In v2 a join is an ask, whose reply carries the member list. `options` (sent
   * as JSON) go to a game room's `on_join`, and again with a join after a
   * reconnection. */
  join(name: string, options?: Payload): Room;
  /** Join a room and wait for the server: resolves with the open Room, rejects with a
   * RoomerError (`join_denied`, `too_many_rooms`, `invalid_name`; a game room's
   * `room_full`, `room_locked`, `no_such_room`...). */
  joined(name: string, options?: Payload): Promise<Room>;
  /** v2: create a game room of `type` (or with the id `type:suffix`) and join it:
   * resolves with its Room, whose `name` is the room's id; rejects with a RoomerError
   * (`create_denied` with the `on_create` hook's text, `room_exists`, `room_limit`...).
   * Waits for the connection. A Room's handlers registered as the promise resolves are
   * there for the room's first messages. */
  create(type: string, options?: Payload): Promise<Room>;
  /** v2: join a game room of `type` that the server picks by `options` (the type's
   * `filter_by` and `sort_by`), or create one: as `create()`. */
  joinOrCreate(type: string, options?: Payload): Promise<Room>;
  /** v2: watch the list of game rooms of `type`, those whose metadata hold every key of
   * `options.filter` with its value: resolves once the first list came (RoomerError
   * `no_such_room_type`, `too_many_watches`). A second watch of a type replaces the
   * first. */
  watchRooms(type: string, options?: { filter?: Record<string, unknown> }): Promise<RoomWatch>;

  /** v2: connect to namespace `name` (its `connect` ask): resolves with its root room,
   * rejects with a RoomerError (`no_such_namespace`; `namespace_denied`, whose
   * `serverMessage` is the server hook's `Deny` text). Called before the connection is
   * up it waits; a namespace connected (or connecting) already gives the same root; `""`
   * is the default namespace's root. After a reconnection the client connects to its
   * namespaces again, then joins their rooms again (each fires `reconnected`); a
   * namespace the server then refuses fires `error` on its root and closes with its
   * rooms. Throws an Error on a v1 connection. */
  namespace(name: string): Promise<Room>;
  /** v2: leave this room's namespace (not the default one: use `close()`); its rooms
   * (root included) fire `close` and lose their handlers. Resolves once the server
   * answered, at once while disconnected; rejects with a RoomerError if it refused. */
  disconnect(): Promise<void>;
  /** v2: ask the server `event` in this room (its handler's return value is the
   * reply): resolves with the reply's payload; rejects with a RoomerError whose `code`
   * is the server's (`no_handler`, `handler_error`, `denied`, a handler's own code...),
   * `timeout`, `disconnected`, `queue_full` or `closed`. While disconnected it waits in
   * the send queue (its timeout running). Ids are unique among the connection's asks
   * still waiting; nothing waits after the promise settled. Throws an Error on v1, a
   * TypeError for the reserved names of `send()`. */
  ask(event: string, payload?: Payload, options?: AskOptions): Promise<Uint8Array>;
  /** v2: answer the server's asks of `event` in this room: `fn`'s return value (or
   * resolved value) is the reply; a throw or rejection is an error reply carrying a
   * RoomerError's `code` and `serverMessage`, else `handler_error` "internal error". One
   * handler per event (a second replaces the first); an ask nobody answers gets
   * `no_handler`. `senderId` is `""` (the server). */
  onAsk(event: string, fn: (payload: Uint8Array, senderId: string) => AskAnswer): Room;
  /** v2: remove the `onAsk` handler of `event`. */
  offAsk(event: string): Room;
  /** v2: this connection's asks waiting for an answer (queued ones included). */
  pendingAsks(): number;
  /** v2: replies this connection got for no ask waiting (one that timed out, say):
   * counted and ignored. */
  unknownReplies(): number;
  /** Resolves with this Room once it is open (root: connected; others: joined); at once
   * if it is; through reconnections; rejects with RoomerError if it closes first. */
  ready(): Promise<Room>;
  /** Leave this room (`close` fires when the server confirms; its handlers are then
   * removed). On root: close the connection; on a namespace's root: `disconnect()`. */
  leave(): Room;
  /** Close the connection and every room, without reconnection. */
  close(): Room;
  /** Leave every room of this namespace but its root. */
  purge(): Room;
  /** This connection's rooms of this namespace by name, root included. */
  rooms(): Readonly<Record<string, Room>>;

  /** Send `event` to the room's other members, or with `dst` (a client id) to that client
   * only. While disconnected it waits in a queue (see `sendQueueLimit`); what cannot be
   * sent fires `dropped`. Reserved names (`join`, `leave`, `join_ack`, `leave_ack`,
   * `new_member`, `member_left`, `error`, `open`, `close`, `reconnecting`,
   * `reconnected`, `dropped`, `resumed`, `lost`, the sessions' `session`, `session.ack`,
   * `session.resumed`, `session.lost`, `member_dropped`, `member_back`, the game rooms'
   * `room.create`, `room.join_or_create`,
   * `rooms.watch`, `rooms.unwatch`, `room.closed`, `rooms.changes`; in v2 also
   * `connect`, `disconnect`) throw a TypeError, and so does a payload that is none of
   * Payload's kinds (a Map would arrive as `{}`). */
  send(event: string, payload?: Payload, dst?: string): Room;
  /** `send(event, value as JSON text, dst)`; what JSON would lose without a word (a
   * function, a Map, a Set, nested or not) throws a TypeError. */
  sendJSON(event: string, value: unknown, dst?: string): Room;

  /** A game room ended under its members (then `close` fires): why (v2, game rooms). */
  on(event: "room.closed", fn: (info: RoomClosed) => void): Room;
  /** One of the room's own events (RoomEvents: `open`, `close`, `new_member`,
   * `member_left`, `member_dropped`, `member_back`, `error`, `reconnecting`,
   * `reconnected`, `resumed`, `lost`, `dropped`). */
  on<E extends keyof RoomEvents>(event: E, fn: RoomEvents[E]): Room;
  /** A custom event from another client (or the server: `senderId` is then `""`). */
  on<E extends string>(event: E & CustomEvent<E>, fn: MessageHandler): Room;
  /** Like `on`, for the next occurrence only. */
  once<E extends keyof RoomEvents>(event: E, fn: RoomEvents[E]): Room;
  once<E extends string>(event: E & CustomEvent<E>, fn: MessageHandler): Room;
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
 * page's host; `http(s)://` and relative URLs are turned into `ws(s)://`. Outside a page
 * (Node.js) it is required and whole (`ws://host:port/ws`). Throws a TypeError for a bad
 * URL or option, or where there is no WebSocket (see `RoomerOptions.WebSocket`). */
export function roomer(url?: string | URLObject, options?: RoomerOptions): Room;

/** A URL object, where the environment has the URL class (a page, Node.js). */
type URLObject = typeof globalThis extends { URL: { prototype: infer U } } ? U : never;

/** A received payload decoded as UTF-8 text. */
export function text(payload: Uint8Array): string;

export default roomer;
