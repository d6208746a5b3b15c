/**
 * roomer.js: the browser client of roomer, room-based real-time messaging over WebSockets.
 *
 *     import roomer from "/roomer.js";
 *     const root = roomer();                         // ws(s)://<this host>/ws
 *     const lobby = await root.joined("lobby");
 *     lobby.on("chat", (payload, senderId) => ...);  // payload: Uint8Array
 *     lobby.send("chat", "hello");
 *
 * One ES module, no dependencies, no build step. Types and docs: roomer.d.ts beside it.
 * It speaks the roomer protocol v1 and keeps the API of the original roomer JS client
 * (join, leave, send, on/once/off, members, id, open; events open, close, new_member,
 * member_left and custom events with (payload, senderId)), adding promises (ready,
 * joined), automatic reconnection with rejoin, a bounded send queue, error events and
 * JSON helpers. With ``roomer(url, {protocol: "v2"})`` it speaks protocol v2
 * (docs/protocol.md), with batch frames (§13) when the server has them (the ``coalesce``
 * option sends a frame's worth of messages as one): namespaces (``root.namespace(name)``)
 * and asks both ways
 * (``room.ask(event, payload)``, ``room.onAsk(event, fn)``), and game rooms (§10):
 * ``root.joinOrCreate(type, options)``, ``root.create(...)``, ``root.joined(id, options)``
 * and live room lists (``root.watchRooms(type)``). It resumes sessions (docs/protocol.md
 * §11, the ``resume`` option): a dropped connection (and a page reloaded while it was
 * down) comes back with the same id and rooms and every message it missed, once each and
 * in order.
 */

// ---- wire codec --------------------------------------------------------------------------
// Everything that knows the byte layout of a message lives here. A codec is
// { frame(kind, id, namespace, room, event, dst, payloadBytes) -> Uint8Array,
//   parse(ArrayBuffer) -> { kind, id, namespace, room, event, dst, src,
//                           payload: Uint8Array } | null }
// and is picked per connection by the WebSocket subprotocol the server accepted. v1 has
// no kind, id or namespace: it frames events of the default namespace only.

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();
// v2 names must be valid UTF-8 (docs/protocol.md §3): a message with a bad one is refused.
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
const EMPTY = new Uint8Array(0);

/** v2 message kinds (docs/protocol.md §3). */
const EVENT = 0;
const ASK = 1;
const REPLY = 2;
const ERROR_REPLY = 3;
const MAX_ASK_ID = 0xffffffff;
/** Batch frames (docs/protocol.md §13): the first byte of a batch, and its bounds. */
const BATCH = 4;
const BATCH_ENTRIES = 256;
const BATCH_BYTES = 65536;
const V2_MIN = 29;

/** Fields, each a uint32 big-endian length + its bytes, after `header` bytes left for the
 * caller to fill in; returns the buffer and a view of it. */
function packFields(header, fields) {
  let size = header;
  for (const f of fields) size += 4 + f.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = header;
  for (const f of fields) {
    view.setUint32(at, f.length);
    out.set(f, at + 4);
    at += 4 + f.length;
  }
  return { out, view };
}

/** Exactly `count` length-prefixed fields from `at` to the end of `buffer`, or null. */
function unpackFields(buffer, at, count) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(buffer);
  const fields = [];
  for (let i = 0; i < count; i++) {
    if (bytes.length - at < 4) return null;
    const size = view.getUint32(at);
    at += 4;
    if (size > bytes.length - at) return null;
    fields.push(bytes.subarray(at, at + size));
    at += size;
  }
  return at === bytes.length ? fields : null;
}

/** Protocol v1: room, event, dst, src, payload, each a uint32 big-endian length + bytes. */
const v1 = Object.freeze({
  encode(room, event, dst, payload) {
    return packFields(0, [utf8.encode(room), utf8.encode(event), utf8.encode(dst), EMPTY,
      payload]).out;
  },
  decode(buffer) {
    const fields = unpackFields(buffer, 0, 5);
    if (fields === null) return null;
    return {
      room: fromUtf8.decode(fields[0]),
      event: fromUtf8.decode(fields[1]),
      dst: fromUtf8.decode(fields[2]),
      src: fromUtf8.decode(fields[3]),
      payload: fields[4],
    };
  },
  frame(kind, id, namespace, room, event, dst, payload) {
    return this.encode(room, event, dst, payload);
  },
  parse(buffer) {
    const msg = this.decode(buffer);
    if (msg !== null) Object.assign(msg, { kind: EVENT, id: 0, namespace: "" });
    return msg;
  },
});

/** Protocol v2: kind (u8), id (u32 big-endian), then namespace, room, event, dst, src and
 * payload as v1 fields: a v2 body is kind | id | namespace | a v1 body. */
const v2 = Object.freeze({
  frame(kind, id, namespace, room, event, dst, payload) {
    const { out, view } = packFields(5, [utf8.encode(namespace), utf8.encode(room),
      utf8.encode(event), utf8.encode(dst), EMPTY, payload]);
    view.setUint8(0, kind);
    view.setUint32(1, id);
    return out;
  },
  parse(buffer) {
    // The checks of docs/protocol.md §3, in its order: size, header, lengths, names.
    const bytes = new Uint8Array(buffer);
    if (bytes.length < 29) return null;
    const view = new DataView(buffer);
    const kind = bytes[0];
    const id = view.getUint32(1);
    if (kind > ERROR_REPLY || (kind === EVENT) !== (id === 0)) return null;
    const fields = unpackFields(buffer, 5, 6);
    if (fields === null) return null;
    let names;
    try {
      names = fields.slice(0, 5).map((f) => strictUtf8.decode(f));
    } catch {
      return null;
    }
    return {
      kind, id, namespace: names[0], room: names[1], event: names[2], dst: names[3],
      src: names[4], payload: fields[5],
    };
  },
});

/** The entries of a batch body (docs/protocol.md §13), each an ArrayBuffer of its own
 * (a payload handed to the application does not keep the whole batch alive), or null
 * when the batch is malformed: then none of it is handled. */
function splitBatch(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(buffer);
  const entries = [];
  let at = 1;
  while (at < bytes.length) {
    if (entries.length === BATCH_ENTRIES || bytes.length - at < 4) return null;
    const size = view.getUint32(at);
    at += 4;
    if (size < V2_MIN || size > bytes.length - at) return null;
    entries.push(buffer.slice(at, at + size));
    at += size;
  }
  return entries.length ? entries : null;
}

/** A batch body of v2 bodies whose entries take ``size`` bytes (4 + length each). */
function joinBatch(bodies, size) {
  const out = new Uint8Array(1 + size);
  const view = new DataView(out.buffer);
  out[0] = BATCH;
  let at = 1;
  for (const body of bodies) {
    view.setUint32(at, body.length);
    out.set(body, at + 4);
    at += 4 + body.length;
  }
  return out;
}

/** The subprotocols that select v2 (docs/protocol.md §1): with batch frames, and without. */
const V2 = "roomer.v2";
const V2_BATCH = "roomer.v2.batch";
/** Codecs by the subprotocol the server chose ("" = none requested: v1). */
const CODECS = { "": v1, [V2]: v2, [V2_BATCH]: v2 };
/** Subprotocols offered at connect, by the protocol option (v1 offers none). v2 offers
 * batches first: a server without them names roomer.v2, and batches stay off. */
const OFFERED = { v1: [], v2: [V2_BATCH, V2] };
/** Coalescing waits for the next animation frame, or this many ms where none comes (no
 * requestAnimationFrame outside a page; none fires in a hidden one). */
const FRAME_MS = 16;

// ---- names and payloads ------------------------------------------------------------------

const ROOT = "root";
/** Events the server handles or sends itself: a client may not send them (docs/protocol.md §8-§9).
 * In v2 ``connect`` and ``disconnect`` too (namespaces, docs/protocol.md §6). */
const SERVER_EVENTS = new Set([
  "join", "leave", "join_ack", "leave_ack", "new_member", "member_left", "error", "open",
  "close", "cluster.down", "cluster.up", "session", "session.ack", "session.resumed",
  "session.lost", "member_dropped", "member_back",
]);
const NAMESPACE_EVENTS = new Set(["connect", "disconnect"]);
/** Game rooms' asks and the events the server sends about them (docs/protocol.md §10). */
const GAME_EVENTS = new Set(["room.create", "room.join_or_create", "rooms.watch",
  "rooms.unwatch", "room.closed", "rooms.changes"]);
/** Events this client emits on its own: not sent, and a peer's message so named is ignored. */
const LOCAL_EVENTS = new Set(["reconnecting", "reconnected", "dropped", "resumed", "lost"]);

// ---- sessions (docs/protocol.md §11) -----------------------------------------------------

/** Acknowledge after this many messages, or this many ms after the first unacknowledged
 * one: what the server keeps for a resume is what was not acknowledged, up to its
 * resume_replay bytes, so it must hear often enough not to forget what it may need. */
const ACK_EVERY = 256;
const ACK_DELAY = 500;
/** What a client tells the server on a live socket but had no answer to when the socket
 * dropped (or did while away): on a resumed session the server may still hold the room,
 * namespace or watch, so it is told again; a new session starts without them anyway. */
const OWED = new Set(["leave", "disconnect", "rooms.unwatch"]);
/** How many clients this page made for each URL: the n-th one of a URL keeps its session
 * under its own key, so two clients of one page do not resume each other's session after
 * a reload (the page makes them again in the same order). */
const clientsOfUrl = new Map();

/** The page's sessionStorage, or null: outside a page, or where the page may not use it
 * (reading the property throws in a sandboxed frame or with storage disabled). */
function pageStorage() {
  try {
    const storage = globalThis.sessionStorage;
    return storage && typeof storage.getItem === "function" ? storage : null;
  } catch {
    return null;
  }
}

let channel = null;
const tasks = [];

/** Run ``fn`` in a task of its own, at once after this one and its microtasks (no timer:
 * timers are clamped, and throttled in hidden pages). */
function nextTask(fn) {
  if (typeof setImmediate === "function") {
    setImmediate(fn); // Node.js
  } else if (typeof MessageChannel === "function") {
    if (channel === null) {
      channel = new MessageChannel();
      channel.port1.onmessage = () => tasks.shift()();
    }
    tasks.push(fn);
    channel.port2.postMessage(null);
  } else {
    setTimeout(fn);
  }
}

/** Whether this runs in a page that is hidden: it has no frames to wait for, and its
 * timers run at most once a second. */
function pageHidden() {
  return typeof document !== "undefined" && document.visibilityState === "hidden";
}

/** ``url`` with ``query`` added to what query it has (kept byte for byte). */
function withQuery(url, query) {
  const full = new URL(url);
  full.search = full.search.length > 1 ? `${full.search}&${query}` : `?${query}`;
  return full.href;
}

/** What a page stored for a session: {token, received, rooms}, or null if it is not that
 * (another version's, or edited by hand). */
function parseSaved(textValue) {
  let saved;
  try {
    saved = JSON.parse(textValue);
  } catch {
    return null;
  }
  if (!saved || typeof saved.token !== "string" || saved.token === "" ||
      !Number.isSafeInteger(saved.received) || saved.received < 0) {
    return null;
  }
  const rooms = saved.rooms && typeof saved.rooms === "object" ? saved.rooms : {};
  return { token: saved.token, received: saved.received, rooms };
}

/** Whether JSON.stringify sends what ``value`` holds: an array, an object that says how
 * (``toJSON()``, as a Date has), or a plain object (its prototype a root one: an object
 * literal's, or ``null``, from any realm). A Map, a Set or an instance of a class without
 * ``toJSON()`` would become ``{}``. */
function sendsAsJSON(value) {
  if (Array.isArray(value) || typeof value.toJSON === "function") return true;
  const proto = Object.getPrototypeOf(value);
  return proto === null || Object.getPrototypeOf(proto) === null;
}

function kindOf(value) {
  const ctor = value.constructor;
  return typeof ctor === "function" && ctor.name ? ctor.name
    : Object.prototype.toString.call(value).slice(8, -1);
}

/** The JSON text of ``value``, refusing with a TypeError what JSON.stringify would lose
 * without a word: a function or a symbol, or an object (here or nested) that is not
 * plain (``sendsAsJSON``). */
function toJSON(value) {
  if (typeof value === "function" || typeof value === "symbol") {
    throw new TypeError(`roomer: cannot send a ${typeof value} as JSON`);
  }
  return JSON.stringify(value, (key, v) => {
    if (typeof v === "object" && v !== null && !sendsAsJSON(v)) {
      throw new TypeError(`roomer: cannot send a ${kindOf(v)} as JSON${key ? ` (at "${key}")` :
        ""}: it would arrive as {}; send a plain object, an array, a string or bytes, or give ` +
        "it a toJSON() method");
    }
    return v;
  });
}

/** Bytes of a payload: string (UTF-8), ArrayBuffer, any typed array or DataView; null or
 * undefined is empty; numbers and booleans are sent as text; plain objects and arrays as
 * JSON (``toJSON``); anything else throws a TypeError. */
function toBytes(payload) {
  if (payload === undefined || payload === null) return EMPTY;
  if (typeof payload === "string") return utf8.encode(payload);
  if (payload instanceof Uint8Array) return payload;
  if (ArrayBuffer.isView(payload)) {
    return new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
  }
  if (payload instanceof ArrayBuffer || Object.prototype.toString.call(payload) ===
      "[object ArrayBuffer]") {
    return new Uint8Array(payload);
  }
  if (typeof payload === "number" || typeof payload === "boolean") {
    return utf8.encode(String(payload));
  }
  if (typeof payload === "object") return utf8.encode(toJSON(payload));
  throw new TypeError(`roomer: cannot send a payload of type ${typeof payload}`);
}

/** The text of a received payload (UTF-8). */
export function text(payload) {
  return fromUtf8.decode(payload);
}

/** An error the server answered (``code`` is its error code), or ``closed``. */
export class RoomerError extends Error {
  constructor(code, message, event = "", room = "") {
    super(`${code}: ${message}`);
    this.name = "RoomerError";
    this.code = code;
    this.serverMessage = message;
    this.event = event;
    this.room = room;
  }
}

function report(err) {
  // A throwing handler must not stop the others or the client: surface it as an
  // uncaught error (the console shows it) and go on.
  if (typeof reportError === "function") reportError(err);
  else setTimeout(() => { throw err; });
}

function checkName(kind, name) {
  if (typeof name !== "string" || name === "") {
    throw new TypeError(`roomer: a ${kind} name must be a non-empty string`);
  }
}

function defaultUrl() {
  if (typeof location === "undefined") throw new TypeError("roomer: give the server's URL");
  return "/ws";
}

function wsUrl(url) {
  let full;
  try {
    full = typeof location === "undefined" ? new URL(url) : new URL(url, location.href);
  } catch {
    throw new TypeError(`roomer: "${url}" is no URL` + (typeof location === "undefined"
      ? " (outside a page a URL is whole: ws://host:port/ws)" : ""));
  }
  if (full.protocol === "http:") full.protocol = "ws:";
  else if (full.protocol === "https:") full.protocol = "wss:";
  return full.href;
}

const RECONNECT = Object.freeze({
  initialDelay: 500, maxDelay: 10000, factor: 2, jitter: 0.5, maxAttempts: Infinity,
  // 1000 and 1008 mean the server closed this client on purpose (a normal close, a kick,
  // a refused on_connect): coming back at once would undo that. roomer's own 1008 for a
  // receiver that fell behind ("slow consumer...", "write timeout") or one that sent past
  // its rate limit ("rate limit exceeded") is worth a retry, after the backoff.
  shouldReconnect: (code, reason) => code !== 1000 &&
    (code !== 1008 || /^(slow consumer|write timeout|rate limit exceeded)/.test(reason)),
});

function readOptions(options = {}) {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("roomer: options must be an object");
  }
  let reconnect = null;
  if (options.reconnect === undefined || options.reconnect === true) {
    reconnect = RECONNECT;
  } else if (options.reconnect && typeof options.reconnect === "object") {
    reconnect = { ...RECONNECT, ...options.reconnect };
  } else if (options.reconnect !== false) {
    throw new TypeError("roomer: options.reconnect must be true, false or an object");
  }
  const limit = options.sendQueueLimit ?? 256;
  if (!Number.isInteger(limit) || limit < 0) {
    throw new TypeError("roomer: options.sendQueueLimit must be an integer >= 0");
  }
  const flushRate = options.flushRate ?? 100;
  if (typeof flushRate !== "number" || !(flushRate >= 0) || !Number.isFinite(flushRate)) {
    throw new TypeError("roomer: options.flushRate must be a number of messages/s >= 0");
  }
  const protocol = options.protocol ?? "v1";
  if (!Object.hasOwn(OFFERED, protocol)) {
    throw new TypeError('roomer: options.protocol must be "v1" or "v2"');
  }
  const resume = options.resume ?? reconnect !== null;
  if (typeof resume !== "boolean") {
    throw new TypeError("roomer: options.resume must be true or false");
  }
  const coalesce = options.coalesce ?? false;
  if (typeof coalesce !== "boolean") {
    throw new TypeError("roomer: options.coalesce must be true or false");
  }
  const WebSocket = options.WebSocket ?? globalThis.WebSocket;
  if (typeof WebSocket !== "function") {
    throw new TypeError(options.WebSocket === undefined
      ? "roomer: this runtime has no WebSocket (Node.js before 22): pass one, as in " +
        'roomer(url, {WebSocket}) with `import WebSocket from "ws"`'
      : "roomer: options.WebSocket must be a WebSocket constructor");
  }
  return {
    protocol,
    reconnect,
    resume,
    coalesce,
    sendQueueLimit: limit,
    flushRate,
    connectTimeout: options.connectTimeout ?? 10000,
    WebSocket,
  };
}

// ---- rooms -------------------------------------------------------------------------------
// A Room is the frozen public face; its state is a plain record the connection drives.
// Room states: joining (asked, no join_ack yet), open, suspended (was open, connection
// lost, will be joined again), leaving (leave sent), closed (for good).
// A space is the rooms of one namespace ("" the default one, all v1 has); its root record
// is the namespace's root room, whose state is the namespace's: joining while its connect
// is unanswered, open once connected.

function newRecord(link, name, space, options = EMPTY) {
  const rec = {
    link, name, space, state: "joining", everOpen: false, members: [], handlers: new Map(),
    askHandlers: new Map(), waiters: [], room: null, options,
  };
  rec.room = new Room(rec);
  return rec;
}

function newSpace(link, name) {
  const space = { name, rooms: new Map(), root: null, watches: new Map() };
  space.root = newRecord(link, ROOT, space);
  space.rooms.set(ROOT, space.root);
  return space;
}

function emit(rec, event, ...args) {
  const list = rec.handlers.get(event);
  if (!list || list.length === 0) return false;
  for (const entry of [...list]) {
    if (entry.once) removeEntry(rec, event, entry);
    try {
      entry.call(...args);
    } catch (err) {
      report(err);
    }
  }
  return true;
}

function addEntry(rec, event, fn, call, once) {
  checkName("event", event);
  if (typeof fn !== "function") throw new TypeError("roomer: a handler must be a function");
  let list = rec.handlers.get(event);
  if (!list) rec.handlers.set(event, (list = []));
  list.push({ fn, call, once });
}

function removeEntry(rec, event, entry) {
  const list = rec.handlers.get(event);
  const at = list ? list.indexOf(entry) : -1;
  if (at >= 0) list.splice(at, 1);
}

function settle(rec, error) {
  const waiters = rec.waiters;
  if (waiters.length) rec.link.settled = true;
  rec.waiters = [];
  for (const w of waiters) {
    if (error) w.reject(error);
    else w.resolve(rec.room);
  }
}

const secret = new WeakMap();

class Room {
  constructor(rec) {
    secret.set(this, rec);
    Object.freeze(this);
  }

  /** This room's name ("root" for the root room). */
  get name() { return secret.get(this).name; }

  /** This client's id: the server assigns a new one on every (re)connection. */
  id() { return secret.get(this).link.id; }

  /** True while the room is joined and the connection is up. */
  open() {
    const rec = secret.get(this);
    return rec.state === "open" && rec.link.state === "open";
  }

  /** A copy of the member ids (this client included), from join_ack and presence. */
  members() { return [...secret.get(this).members]; }

  /** The namespace of this room ("" the default one, all v1 has). */
  get namespaceName() { return secret.get(this).space.name; }

  /** Join a room on this connection, in this room's namespace; returns its Room at once
   * (queued until connected). ``options`` (JSON) go to a game room's on_join. */
  join(name, options) {
    const rec = secret.get(this);
    return rec.link.join(name, rec.space, options);
  }

  /** Join a room and wait: resolves with the Room on join_ack (v2: the join ask's reply),
   * rejects with a RoomerError whose ``code`` is the server's (join_denied,
   * too_many_rooms, and for game rooms room_full, room_locked, no_such_room...). */
  joined(name, options) { return this.join(name, options).ready(); }

  /** v2: create a game room of ``type`` (or with the id ``type:suffix``) and join it:
   * a promise of its Room, named by its id (RoomerError: create_denied, room_exists...). */
  create(type, options) {
    const rec = secret.get(this);
    return rec.link.findRoom(rec.space, "room.create", type, options);
  }

  /** v2: join a game room of ``type`` the server picks by ``options``, or create one: a
   * promise of its Room, named by its id. */
  joinOrCreate(type, options) {
    const rec = secret.get(this);
    return rec.link.findRoom(rec.space, "room.join_or_create", type, options);
  }

  /** v2: watch the list of game rooms of ``type`` (``options.filter``: metadata keys and
   * values the rooms must hold): a promise of a RoomWatch once the first list came. */
  watchRooms(type, options = {}) {
    const rec = secret.get(this);
    return rec.link.watchRooms(rec.space, type, options);
  }

  /** v2: connect to namespace ``name``: a promise of its root room (join, send, ask
   * there), rejected with a RoomerError whose ``code`` is the server's
   * (no_such_namespace, namespace_denied...). Reconnection connects it again. */
  namespace(name) { return secret.get(this).link.namespace(name); }

  /** v2: leave this room's namespace (not the default one: close()); its rooms close.
   * Resolves once the server answered (at once while disconnected). */
  disconnect() {
    const rec = secret.get(this);
    return rec.link.disconnectSpace(rec.space);
  }

  /** v2: ask the server ``event`` in this room: a promise of the reply's payload
   * (Uint8Array), rejected with a RoomerError whose ``code`` is the server's error code,
   * ``timeout`` (no answer within ``options.timeout`` ms, default 5000; 0: no limit),
   * ``disconnected`` (the connection was lost first) or ``closed``. While disconnected the
   * ask waits in the send queue. */
  ask(event, payload, options = {}) {
    const rec = secret.get(this);
    return rec.link.ask(rec, event, payload, options);
  }

  /** v2: answer the server's asks of ``event`` in this room with ``fn(payload,
   * senderId)``: its return value (or what its promise resolves to) is the reply, sent as
   * send() sends payloads; a throw (or rejection) is an error reply: a RoomerError's
   * code and message, else ``handler_error`` "internal error". One function per event. */
  onAsk(event, fn) {
    checkName("event", event);
    if (typeof fn !== "function") throw new TypeError("roomer: a handler must be a function");
    secret.get(this).askHandlers.set(event, fn);
    return this;
  }

  /** v2: stop answering asks of ``event`` here (they get ``no_handler``). */
  offAsk(event) {
    secret.get(this).askHandlers.delete(event);
    return this;
  }

  /** v2: this connection's asks of the server still waiting for an answer. */
  pendingAsks() { return secret.get(this).link.pendingAsks(); }

  /** v2: replies this connection got to no ask waiting (late, or unknown ids). */
  unknownReplies() { return secret.get(this).link.unknownReplies; }

  /** Resolves with this Room once it is open (root: connected; others: joined), at once
   * if it is; waits through reconnects; rejects if it closes for good first. */
  ready() {
    const rec = secret.get(this);
    if (rec.state === "open" && rec.link.state === "open") return Promise.resolve(this);
    if (rec.state === "closed" || rec.state === "leaving") {
      return Promise.reject(rec.closedBy ?? new RoomerError("closed", "the room is closed",
        "join", rec.name));
    }
    return new Promise((resolve, reject) => rec.waiters.push({ resolve, reject }));
  }

  /** Leave this room (root: close the connection; a namespace's root: disconnect());
   * ``close`` fires on leave_ack. */
  leave() {
    const rec = secret.get(this);
    if (rec.name === ROOT && rec === rec.link.root) rec.link.close();
    else if (rec === rec.space.root) rec.link.disconnectSpace(rec.space);
    else rec.link.leave(rec);
    return this;
  }

  /** Close the whole connection, every room, with no reconnection. */
  close() {
    secret.get(this).link.close();
    return this;
  }

  /** Leave every room of this namespace but its root. */
  purge() {
    const { link, space } = secret.get(this);
    for (const rec of [...space.rooms.values()]) if (rec !== space.root) link.leave(rec);
    return this;
  }

  /** The rooms of this connection in this namespace, by name (root included). */
  rooms() {
    const out = {};
    for (const [name, rec] of secret.get(this).space.rooms) out[name] = rec.room;
    return Object.freeze(out);
  }

  /** Send ``event`` to the room's other members, or with ``dst`` to that client only.
   * While disconnected it is queued (see sendQueueLimit); a message that cannot be
   * queued or delivered fires ``dropped``. */
  send(event, payload, dst = "") {
    const rec = secret.get(this);
    rec.link.send(rec, event, payload, dst);
    return this;
  }

  /** send() with ``value`` as JSON text (refused as send() refuses objects). */
  sendJSON(event, value, dst = "") {
    return this.send(event, toJSON(value), dst);
  }

  /** Call ``fn`` for ``event``: custom events get (payload: Uint8Array, senderId). */
  on(event, fn) {
    addEntry(secret.get(this), event, fn, fn, false);
    return this;
  }

  /** Like on(), for the next ``event`` only. */
  once(event, fn) {
    addEntry(secret.get(this), event, fn, fn, true);
    return this;
  }

  /** Remove ``fn`` from ``event`` (every handler of it without ``fn``, every handler of
   * every event without arguments). */
  off(event, fn) {
    const rec = secret.get(this);
    if (event === undefined) rec.handlers.clear();
    else if (fn === undefined) rec.handlers.delete(event);
    else {
      const list = rec.handlers.get(event) ?? [];
      const at = list.findIndex((e) => e.fn === fn);
      if (at >= 0) list.splice(at, 1);
    }
    return this;
  }

  /** Call ``fn(value, senderId)`` with the payload parsed as JSON; a payload that is
   * not JSON fires ``error`` with code ``invalid_json`` instead. */
  onJSON(event, fn) {
    const rec = secret.get(this);
    addEntry(rec, event, fn, (payload, src) => {
      let value;
      try {
        value = JSON.parse(text(payload));
      } catch (err) {
        emitError(rec, { code: "invalid_json", message: String(err), event });
        return;
      }
      fn(value, src);
    }, false);
    return this;
  }

  /** Call ``fn(text, senderId)`` with the payload decoded as UTF-8. */
  onText(event, fn) {
    addEntry(secret.get(this), event, fn, (payload, src) => fn(text(payload), src), false);
    return this;
  }

  /** Call this room's handlers of ``event`` here, locally (nothing is sent). */
  emit(event, ...args) { return emit(secret.get(this), event, ...args); }

  /** The handlers of ``event`` (of every event without an argument). */
  listeners(event) {
    const rec = secret.get(this);
    const lists = event === undefined ? [...rec.handlers.values()] : [rec.handlers.get(event)];
    return lists.flatMap((list) => (list ?? []).map((e) => e.fn));
  }

  addListener(event, fn) { return this.on(event, fn); }
  removeListener(event, fn) { return this.off(event, fn); }
  removeAllListeners(event) { return this.off(event); }

  /** Remove every handler but those of the events in ``exceptions``. */
  clearListeners(exceptions = []) {
    const rec = secret.get(this);
    for (const event of [...rec.handlers.keys()]) {
      if (!exceptions.includes(event)) rec.handlers.delete(event);
    }
    return this;
  }

  toString() { return `[roomer Room ${this.name}]`; }
}

function emitError(rec, info) {
  // A room's error nobody listens to goes to its namespace's root, then to root; one root
  // ignores too, to the console.
  if (emit(rec, "error", info)) return;
  if (rec !== rec.space.root && emit(rec.space.root, "error", info)) return;
  if (rec.space.root !== rec.link.root && emit(rec.link.root, "error", info)) return;
  console.warn(`roomer: error in room ${rec.name}:`, info);
}

/** What an internal ask (join, leave, connect, disconnect) is told when its socket is
 * gone: not an answer; what it asked for is asked again on the next connection. */
const LOST = Symbol("lost");

function infoOf(err, event) {
  return { code: err.code, message: err.serverMessage, event };
}

// ---- the connection ----------------------------------------------------------------------

class Link {
  constructor(url, options) {
    this.url = wsUrl(url);
    this.options = options;
    this.v2 = options.protocol === "v2";
    this.id = "";
    this.state = "connecting"; // connecting | open | reconnecting | closed
    this.ws = null;
    this.codec = v1;
    this.space = newSpace(this, ""); // the default namespace
    this.spaces = new Map([["", this.space]]); // v2: the namespaces connected (or asked)
    this.rooms = this.space.rooms;
    this.root = this.space.root;
    this.pendingJoins = []; // v1: records whose join was sent on this socket, oldest first
    this.leaving = []; // v1: records whose leave was sent, waiting for leave_ack
    this.queue = []; // sends (and v2 asks) made while not connected, or behind those
    this.flushTimer = null;
    this.tokens = 0; // the queue's flush rate: a bucket of flushRate messages
    this.tokensAt = 0;
    this.asks = new Map(); // v2: this socket's asks waiting for an answer, by id
    this.nextAskId = 1;
    this.unknownReplies = 0;
    this.inbox = []; // messages that came, waiting their turn (drain); null: a bad batch
    this.settled = false; // the message handled last settled a promise
    // Batch frames (docs/protocol.md §13): whether this socket's server named them, and,
    // with the coalesce option, what this socket was given to write at the next frame:
    // {body, item, tail}, item being the send or ask to queue again if the socket drops.
    this.batches = false;
    this.held = [];
    this.heldBytes = 0;
    this.frameRequest = null;
    this.frameTimer = null;
    this.onHidden = null;
    this.attempt = 0;
    this.timer = null;
    // The session (docs/protocol.md §11): its token ("" while there is none), the
    // messages received in it and the count last acknowledged.
    this.token = "";
    this.count = 0;
    this.acked = 0;
    this.ackTimer = null;
    this.verdictDue = false; // the socket asked to resume: its first message is the verdict
    this.owed = []; // {namespace, room, event} to tell the server again if the session resumes
    this.reloaded = null; // rooms a reloaded page's session had, by namespace
    this.hidden = false; // the page is being hidden (maybe unloaded): keep what is stored
    this.storage = null;
    this.storageKey = "";
    this.onPageHide = null;
    this.onPageShow = null;
    if (options.resume) this.restore();
    if (options.coalesce && typeof addEventListener === "function" &&
        typeof document !== "undefined") {
      // A page going out of sight may never see its next frame (or soon its timers):
      // what was held goes now.
      this.onHidden = () => this.release();
      addEventListener("visibilitychange", this.onHidden);
      addEventListener("pagehide", this.onHidden);
    }
    this.connect(true);
  }

  /** Where a page keeps the session: sessionStorage (per tab, and kept across a reload),
   * under a key per URL; what it holds from a page that was here before is resumed. */
  restore() {
    const made = (clientsOfUrl.get(this.url) ?? 0) + 1;
    clientsOfUrl.set(this.url, made);
    this.storage = pageStorage();
    if (this.storage === null) return;
    this.storageKey = `roomer.session ${this.url}${made > 1 ? ` #${made}` : ""}`;
    let saved = null;
    try {
      saved = parseSaved(this.storage.getItem(this.storageKey));
    } catch {
      // unreadable storage: a new session
    }
    if (saved !== null) {
      this.token = saved.token;
      this.count = this.acked = saved.received;
      this.reloaded = saved.rooms;
    }
    if (typeof addEventListener === "function") {
      // pagehide, not beforeunload: it fires on every unload, mobile included, and a
      // beforeunload listener keeps Firefox from putting the page in its back/forward cache.
      this.onPageHide = () => {
        this.hidden = true;
        this.save();
      };
      this.onPageShow = () => {
        this.hidden = false;
      };
      addEventListener("pagehide", this.onPageHide);
      addEventListener("pageshow", this.onPageShow);
    }
  }

  /** Store the session for a reload: at each ack, at a new token and when the page hides,
   * not per message (sessionStorage writes are synchronous). */
  save() {
    if (this.storage === null) return;
    try {
      if (!this.token) {
        this.storage.removeItem(this.storageKey);
        return;
      }
      const rooms = {};
      for (const [name, space] of this.spaces) {
        if (space !== this.space && space.root.state === "closed") continue;
        rooms[name] = [...space.rooms.values()].filter((rec) => rec !== space.root &&
          (rec.state === "open" || rec.state === "suspended")).map((rec) => rec.name);
      }
      this.storage.setItem(this.storageKey, JSON.stringify({
        token: this.token, received: this.count, rooms,
      }));
    } catch {
      // Full or refused: the page then starts a new session after a reload, no more.
    }
  }

  /** The URL of an attempt: a new session, or the resume of the one held. */
  connectUrl() {
    if (!this.options.resume) return this.url;
    return withQuery(this.url, this.token
      ? `session=${encodeURIComponent(this.token)}&received=${this.count}` : "session=new");
  }

  connect(first) {
    this.timer = null;
    const offered = OFFERED[this.options.protocol];
    const url = this.connectUrl();
    this.verdictDue = this.options.resume && this.token !== "";
    this.batches = false; // until this socket's server names them
    let ws;
    try {
      ws = offered.length ? new this.options.WebSocket(url, offered)
        : new this.options.WebSocket(url);
    } catch (err) {
      if (first) throw err; // a malformed URL: the caller's mistake, say so at once
      this.lost({ code: 1006, reason: String(err) });
      return;
    }
    ws.binaryType = "arraybuffer";
    ws.onerror = () => {
      // The close event that follows says all there is (and the ws package, in Node,
      // throws an error event that has no listener). Browsers and ws fire it in the same
      // task as this one; Node's own WebSocket does not after a failed connection, and
      // stays CONNECTING: end that attempt here when no close came.
      if (ws.readyState === 1) return; // WebSocket.OPEN
      setTimeout(() => {
        if (ws === this.ws) this.lost({ code: 1006, reason: "" });
      });
    };
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      if (this.v2 && ws.protocol !== V2 && ws.protocol !== V2_BATCH) {
        // Browsers fail a handshake whose 101 names none of the offered subprotocols;
        // a WebSocket that lets one through would misread every byte: stop for good.
        this.ws = null;
        this.shutdown(new RoomerError("unsupported_protocol", "the server did not accept " +
          `protocol v2 (its 101 named ${JSON.stringify(ws.protocol)}): it speaks v1 only`,
          "connect"));
        ws.close(1000);
        return;
      }
      this.codec = CODECS[ws.protocol] ?? v1;
      // Per socket: a reconnection may reach an older server, which names roomer.v2.
      this.batches = ws.protocol === V2_BATCH;
    };
    ws.onmessage = (e) => {
      if (ws === this.ws) this.received(e.data, ws);
    };
    ws.onclose = (e) => {
      if (ws === this.ws) this.lost(e);
    };
    const limit = this.options.connectTimeout;
    if (limit > 0 && Number.isFinite(limit)) {
      this.timer = setTimeout(() => {
        // No root join_ack in time: drop this attempt (onclose schedules the next).
        if (ws === this.ws && this.state !== "open") ws.close();
      }, limit);
    }
  }

  received(data, ws) {
    const buffer = typeof data === "string" ? utf8.encode(data).buffer : data;
    const idle = this.inbox.length === 0;
    if (this.batches && buffer.byteLength > 0 && new Uint8Array(buffer)[0] === BATCH) {
      // Each entry as if it had come alone: counted, the verdict the first one.
      const entries = splitBatch(buffer);
      if (entries === null) this.inbox.push(null);
      else for (const entry of entries) this.inbox.push(entry);
    } else {
      this.inbox.push(buffer);
    }
    if (idle) this.drain(ws);
  }

  /** Handle what came, in order. After a message that settled a promise (an answer, a
   * room or namespace open, the connection up) the rest waits for a task of its own, as
   * it would have in frames of their own: what the application does once its ``await``
   * returns (the handlers of a room just joined) comes before the messages after it. */
  drain(ws) {
    while (this.inbox.length) {
      // The client closed, or the socket went (both empty the inbox): what it held was
      // not handled, so not counted either, and a resume brings it again.
      if (ws !== this.ws) return;
      const entry = this.inbox.shift();
      this.settled = false;
      try {
        if (entry === null) this.handle(null, "batch");
        else this.handle(this.codec.parse(entry), "message");
      } catch (err) {
        // As a throw out of its own message event would be: the next one is handled.
        report(err);
      }
      if (this.settled && this.inbox.length) {
        nextTask(() => this.drain(ws));
        return;
      }
    }
  }

  /** One message of the server (``msg`` null: malformed, a ``what`` it warns of). */
  handle(msg, what) {
    if (this.verdictDue) {
      this.verdictDue = false;
      if (msg !== null && msg.namespace === "" && msg.room === ROOT && msg.kind === EVENT) {
        if (msg.event === "session.resumed") {
          this.resumed(msg);
          return;
        }
        if (msg.event === "session.lost") {
          this.sessionLost(parseInfo(msg.payload, "resume_failed"));
          return;
        }
      }
      // No verdict: a server that ignores sessions (this is its root join_ack).
      this.sessionLost({ code: "resume_failed", message: "the server answered the resume " +
        "with no verdict (its sessions are off)" });
    }
    if (this.options.resume) this.tally();
    if (msg === null) {
      console.warn(`roomer: the server sent a malformed ${what}; ignored`);
      return;
    }
    if (msg.kind >= REPLY) {
      this.answered(msg);
      return;
    }
    const space = this.spaces.get(msg.namespace);
    if (msg.kind === ASK) {
      this.asked(space, msg);
      return;
    }
    if (!space) return; // a namespace left meanwhile
    const rec = space.rooms.get(msg.room);
    switch (msg.event) {
      case "join_ack":
        this.joinAck(space, msg);
        break;
      case "session":
        if (msg.room === ROOT && space === this.space && this.options.resume) {
          const info = parseInfo(msg.payload, "");
          if (typeof info.token === "string" && info.token !== "") {
            this.token = info.token;
            this.save();
          }
        }
        break;
      case "session.ack":
      case "session.resumed":
      case "session.lost":
        break; // a verdict comes first on its socket only (above)
      case "member_dropped":
      case "member_back":
        // A member's connection dropped and the server holds its session; back: resumed.
        // It stays a member all along: members() does not change.
        if (!rec || (rec.state !== "open" && rec.state !== "joining")) return;
        emit(rec, msg.event, text(msg.payload));
        break;
      case "leave_ack":
        this.leaveAck(space, msg.room);
        break;
      case "new_member":
      case "member_left": {
        if (!rec || (rec.state !== "open" && rec.state !== "joining")) return;
        const id = text(msg.payload);
        const at = rec.members.indexOf(id);
        if (msg.event === "new_member" && at < 0) rec.members.push(id);
        else if (msg.event === "member_left" && at >= 0) rec.members.splice(at, 1);
        else return;
        emit(rec, msg.event, id);
        break;
      }
      case "error":
        this.serverError(space, msg);
        break;
      case "rooms.changes": {
        const watch = space.watches.get(msg.room);
        if (watch) watch.apply(JSON.parse(text(msg.payload)));
        break;
      }
      case "room.closed": {
        // A game room ended under its members: its handlers hear why, then it closes.
        if (!rec || rec.state === "closed") return;
        let info;
        try {
          info = JSON.parse(text(msg.payload));
        } catch {
          info = { code: "closed", message: "" };
        }
        emit(rec, "room.closed", info);
        this.finish(rec, new RoomerError(info.code, info.message, "join", rec.name), true);
        break;
      }
      default:
        if (!rec || rec.state === "closed" || LOCAL_EVENTS.has(msg.event)) return;
        emit(rec, msg.event, msg.payload, msg.src);
    }
  }

  joinAck(space, msg) {
    const members = parseMembers(msg.payload);
    if (msg.room === ROOT && space === this.space && this.state !== "open") {
      this.connected(msg.src, members);
      return;
    }
    const at = this.pendingJoins.findIndex((r) => r.name === msg.room);
    let rec = at >= 0 ? this.pendingJoins.splice(at, 1)[0] : space.rooms.get(msg.room);
    if (!rec) {
      // A join the server made for this client (conn.join): it is a room like any other.
      rec = newRecord(this, msg.room, space);
      space.rooms.set(msg.room, rec);
    }
    if (rec.state === "leaving" || rec.state === "closed") return;
    this.opened(rec, members);
  }

  connected(id, members) {
    const previous = this.id;
    const again = this.root.everOpen;
    clearTimeout(this.timer);
    this.timer = null;
    this.id = id;
    this.state = "open";
    this.attempt = 0;
    this.root.members = members;
    this.root.state = "open";
    this.root.everOpen = true;
    // Namespaces, then joins, then what was queued: the server handles them in this
    // order, so a queued message for a room reaches it after the room is joined again.
    for (const space of this.spaces.values()) {
      if (space !== this.space) this.connectSpace(space);
    }
    for (const space of this.spaces.values()) {
      for (const rec of space.rooms.values()) {
        if (rec !== space.root && (rec.state === "joining" || rec.state === "suspended")) {
          this.sendJoin(rec);
        }
      }
      // Room lists watched: the list again (what changed while away fires "change").
      for (const watch of space.watches.values()) watch.start().catch(report);
    }
    this.tokens = this.options.flushRate;
    this.tokensAt = Date.now();
    this.flush();
    settle(this.root);
    if (again) emit(this.root, "reconnected", id, previous);
    else emit(this.root, "open");
  }

  // ---- sessions (docs/protocol.md §11) -------------------------------------------------

  /** One more message of the session: acknowledged with the 64th since the last ack, or
   * within ACK_DELAY of the first one since (one timer for them all). */
  tally() {
    this.count += 1;
    if (!this.token) return; // no session (yet, or the server has them off)
    if (this.count - this.acked >= ACK_EVERY) this.ack();
    else if (this.ackTimer === null) this.ackTimer = setTimeout(() => this.ack(), ACK_DELAY);
  }

  ack() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (!this.token || this.count === this.acked || !this.sendable()) return;
    this.write("", ROOT, "session.ack", utf8.encode(String(this.count)), "");
    this.acked = this.count;
    this.save();
  }

  /** The verdict ``session.resumed``: the server kept this client's id, rooms and
   * namespaces, and sends next what it missed. Nothing is joined again; what waited is
   * sent. A page that was reloaded meanwhile gets its rooms back too. */
  resumed(msg) {
    const info = parseInfo(msg.payload, "");
    const first = !this.root.everOpen;
    clearTimeout(this.timer);
    this.timer = null;
    if (typeof info.token === "string" && info.token !== "") this.token = info.token;
    this.acked = this.count; // the resume said as much
    this.id = typeof info.id === "string" && info.id ? info.id : msg.src;
    this.state = "open";
    this.attempt = 0;
    const back = [];
    for (const space of this.spaces.values()) {
      for (const rec of space.rooms.values()) {
        if (rec.state === "suspended") {
          rec.state = "open";
          back.push(rec);
        }
      }
    }
    if (first) {
      // A reloaded page: its first connection, into the session of the page before it.
      this.root.members = [this.id];
      this.root.state = "open";
      this.root.everOpen = true;
    }
    // Namespaces, then joins, then what the server was not told, then what was queued:
    // the server handles them in that order. A join the server had when the socket
    // dropped is answered twice (its join_ack is among the messages missed): harmless,
    // where a join lost with the socket would leave its room joining for ever.
    for (const space of this.spaces.values()) {
      if (space !== this.space) this.connectSpace(space);
    }
    for (const space of this.spaces.values()) {
      for (const rec of space.rooms.values()) {
        if (rec !== space.root && rec.state === "joining") this.sendJoin(rec);
      }
    }
    this.leaveReloaded();
    const owed = this.owed;
    this.owed = [];
    for (const item of owed) this.tellAgain(item);
    this.tokens = this.options.flushRate;
    this.tokensAt = Date.now();
    this.flush();
    this.save();
    for (const rec of back) settle(rec);
    settle(this.root);
    if (first) emit(this.root, "open");
    for (const space of [...this.spaces.values()]) {
      for (const rec of [...space.rooms.values()]) emit(rec, "resumed", this.id);
    }
  }

  /** A reloaded page resumed: the rooms and namespaces of the page before it that this one
   * did not join again (by the time the verdict came) are left, as the page left them. */
  leaveReloaded() {
    const rooms = this.reloaded;
    this.reloaded = null;
    if (!rooms) return;
    for (const [name, names] of Object.entries(rooms)) {
      const space = this.spaces.get(name);
      if (!space) {
        if (this.v2 && name !== "") this.tellAgain({ namespace: name, room: ROOT,
          event: "disconnect" });
        continue;
      }
      for (const room of Array.isArray(names) ? names : []) {
        if (typeof room === "string" && room !== ROOT && !space.rooms.has(room)) {
          this.tellAgain({ namespace: name, room, event: "leave" });
        }
      }
    }
  }

  /** Tell the server a leave, disconnect or unwatch it may not have had, unless the
   * application took the room, namespace or watch up again meanwhile. The answer changes
   * nothing here: the room (namespace, watch) is gone already. */
  tellAgain({ namespace, room, event }) {
    const space = this.spaces.get(namespace);
    if (event === "disconnect") {
      if (!space) this.internalAsk(namespace, ROOT, "disconnect", () => {});
      return;
    }
    if (!space) return; // its namespace is left: the server took it out with it
    if (event === "rooms.unwatch") {
      if (!space.watches.has(room)) this.internalAsk(namespace, room, event, () => {});
      return;
    }
    if (space.rooms.has(room)) return; // joined again
    if (this.v2) this.internalAsk(namespace, room, "leave", () => {});
    else this.write("", room, "leave", EMPTY, ""); // its leave_ack matches nothing: ignored
  }

  /** Remember to tell the server ``event`` if the session resumes (see OWED). */
  owe(namespace, room, event) {
    if (this.token) this.owed.push({ namespace, room, event });
  }

  /** The verdict ``session.lost`` (or none): a new session follows on this socket, its
   * root join_ack first; from there on it is a reconnection as without sessions. */
  sessionLost(info) {
    this.token = "";
    this.count = 0;
    this.acked = 0;
    this.owed = [];
    this.reloaded = null;
    this.save();
    const code = String(info.code ?? "resume_failed");
    const message = String(info.message ?? "");
    for (const space of [...this.spaces.values()]) {
      for (const rec of [...space.rooms.values()]) emit(rec, "lost", code, message);
    }
  }

  opened(rec, members) {
    const before = rec.members;
    const wasSuspended = rec.state === "suspended";
    rec.members = Array.isArray(members) ? members : [];
    rec.state = "open";
    if (wasSuspended) {
      // The members may have changed while this client was away: tell the difference
      // as presence, so a list kept from the events stays right.
      const self = this.id;
      for (const id of before) {
        if (!rec.members.includes(id) && id !== rec.oldId) emit(rec, "member_left", id);
      }
      for (const id of rec.members) {
        if (!before.includes(id) && id !== self) emit(rec, "new_member", id);
      }
      settle(rec);
      emit(rec, "reconnected", self, rec.oldId);
    } else if (!rec.everOpen) {
      rec.everOpen = true;
      settle(rec);
      emit(rec, "open");
    } else {
      settle(rec);
    }
  }

  leaveAck(space, name) {
    const at = this.leaving.findIndex((r) => r.name === name);
    if (at >= 0) {
      this.finish(this.leaving.splice(at, 1)[0], null, true);
    } else if (this.v2) {
      // v2 leaves are asks: a leave_ack is the server taking this client out (conn.leave).
      const rec = space.rooms.get(name);
      if (rec && rec !== space.root) this.finish(rec, null, true);
    }
  }

  serverError(space, msg) {
    let info;
    try {
      info = JSON.parse(text(msg.payload));
    } catch {
      info = { code: "unknown", message: text(msg.payload), event: "" };
    }
    if (info.event === "join" && this.pendingJoins.length) {
      // Each join is answered once, in order: a join_ack or this error. An error about
      // an invalid room name names root, not the room, so take the oldest pending one.
      let at = this.pendingJoins.findIndex((r) => r.name === msg.room);
      if (at < 0 || msg.room === ROOT) at = 0;
      const rec = this.pendingJoins.splice(at, 1)[0];
      // Told once: to the room's error handlers, else to its waiting promises (they
      // reject), else to root's.
      if (!emit(rec, "error", info) && rec.waiters.length === 0) emitError(this.root, info);
      this.finish(rec, new RoomerError(info.code, info.message, "join", rec.name));
      return;
    }
    if (info.event === "leave") {
      const at = this.leaving.findIndex((r) => r.name === msg.room);
      if (at >= 0) {
        // The server kept this client in the room (an on_leave hook refused).
        this.kept(this.leaving.splice(at, 1)[0], info);
        return;
      }
    }
    emitError(space.rooms.get(msg.room) ?? space.root, info);
  }

  /** A leave the server refused: the room is open again (unless joined anew meanwhile). */
  kept(rec, info) {
    const rooms = rec.space.rooms;
    if (rooms.has(rec.name)) {
      this.finish(rec, null, true);
    } else {
      rec.state = "open";
      rooms.set(rec.name, rec);
    }
    emitError(rooms.get(rec.name), info);
  }

  /** Close ``rec`` for good: close event if it ever opened, waiters rejected; a room
   * that was left also loses its handlers (as leave() did in the original client). */
  finish(rec, error, left = false) {
    if (rec.state === "closed") return;
    const wasOpen = rec.everOpen;
    rec.state = "closed";
    rec.closedBy = error ?? new RoomerError("closed", "the room is closed", "join", rec.name);
    if (rec.space.rooms.get(rec.name) === rec) rec.space.rooms.delete(rec.name);
    const p = this.pendingJoins.indexOf(rec);
    if (p >= 0) this.pendingJoins.splice(p, 1);
    settle(rec, rec.closedBy);
    if (wasOpen) emit(rec, "close");
    if (left) {
      rec.handlers.clear();
      rec.askHandlers.clear();
    }
  }

  lost(event) {
    clearTimeout(this.timer);
    this.timer = null;
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.verdictDue = false;
    this.ws = null;
    this.inbox = [];
    this.requeueHeld();
    this.pendingJoins = [];
    for (const rec of this.leaving) {
      // Left with the connection; unless the session resumes, where the server may not
      // have had the leave.
      this.owe(rec.space.name, rec.name, "leave");
      this.finish(rec, null, true);
    }
    this.leaving = [];
    if (this.state === "closed") return;
    const policy = this.options.reconnect;
    const code = event.code ?? 1006;
    const reason = event.reason ?? "";
    if (policy && this.attempt < policy.maxAttempts && policy.shouldReconnect(code, reason)) {
      this.state = "reconnecting";
      for (const entry of this.asks.values()) {
        if (entry.internal && OWED.has(entry.event)) {
          this.owe(entry.namespace, entry.room, entry.event);
        }
      }
      // Ids are the socket's: what waits for an answer on it gets none. (A resumed
      // session may bring the answer after all: it is counted in unknownReplies.)
      this.dropAsks(() => new RoomerError("disconnected",
        "the connection was lost before the answer"));
      this.save(); // a reload while away resumes from here
      for (const space of this.spaces.values()) {
        for (const rec of space.rooms.values()) {
          if (rec.state === "open") {
            rec.state = "suspended";
            rec.oldId = this.id;
          }
        }
      }
      const base = Math.min(policy.maxDelay, policy.initialDelay * policy.factor ** this.attempt);
      const delay = Math.round(base * (1 - policy.jitter * Math.random()));
      this.attempt += 1;
      this.timer = setTimeout(() => this.connect(false), delay);
      const closed = { code, reason };
      for (const space of [...this.spaces.values()]) {
        for (const rec of [...space.rooms.values()]) {
          emit(rec, "reconnecting", this.attempt, delay, closed);
        }
      }
      return;
    }
    this.shutdown(new RoomerError("closed", `connection closed (${code}${reason ? " " + reason
      : ""})`));
  }

  shutdown(error) {
    this.state = "closed";
    clearTimeout(this.timer);
    this.timer = null;
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (!this.hidden) {
      // The session ends with this client (a close frame of its own, a kick, attempts
      // given up): a reload starts a new one. A page being unloaded keeps it for the
      // next page, even if the socket's close event comes first.
      this.token = "";
      this.save();
    }
    if (this.onPageHide !== null) {
      removeEventListener("pagehide", this.onPageHide);
      removeEventListener("pageshow", this.onPageShow);
      this.onPageHide = this.onPageShow = null;
    }
    if (this.onHidden !== null) {
      removeEventListener("visibilitychange", this.onHidden);
      removeEventListener("pagehide", this.onHidden);
      this.onHidden = null;
    }
    this.requeueHeld(); // held on a closing socket (close() could not write it): refused below
    this.inbox = [];
    clearTimeout(this.flushTimer);
    this.flushTimer = null;
    this.dropAsks(() => error);
    const queued = this.queue;
    this.queue = [];
    for (const item of queued) {
      if (item.ask) item.ask.fail(error);
      else this.dropped(item, "closed");
    }
    for (const space of [...this.spaces.values()]) {
      if (space !== this.space) this.closeSpace(space, error);
    }
    for (const rec of [...this.rooms.values()]) if (rec !== this.root) this.finish(rec, error);
    for (const rec of this.leaving) this.finish(rec, null, true);
    this.leaving = [];
    this.finish(this.root, error);
  }

  close() {
    if (this.state === "closed") return;
    this.release(); // what coalescing held goes before the close frame
    const ws = this.ws;
    this.ws = null;
    this.shutdown(new RoomerError("closed", "closed by this client"));
    if (ws) ws.close(1000);
  }

  join(name, space = this.space, options = undefined) {
    checkName("room", name);
    const existing = space.rooms.get(name);
    if (existing) return existing.room;
    if (this.state === "closed") throw new Error("roomer: the connection is closed");
    if (this.spaces.get(space.name) !== space) {
      throw new Error(`roomer: not connected to the namespace "${space.name}"`);
    }
    const rec = newRecord(this, name, space, options === undefined ? EMPTY
      : toBytes(options).slice());
    space.rooms.set(name, rec);
    if (this.state === "open") this.sendJoin(rec);
    // Otherwise it is joined with the others as soon as the connection is up.
    return rec.room;
  }

  sendJoin(rec) {
    if (!this.v2) {
      this.write("", rec.name, "join", rec.options, "");
      this.pendingJoins.push(rec);
      return;
    }
    this.internalAsk(rec.space.name, rec.name, "join", (payload, err) => {
      if (err === LOST || rec.state === "leaving" || rec.state === "closed") return;
      if (err) {
        // Told once, as a refused v1 join: the room's error handlers, else its waiting
        // promises, else root's.
        const info = infoOf(err, "join");
        if (!emit(rec, "error", info) && rec.waiters.length === 0) {
          emitError(rec.space.root, info);
        }
        this.finish(rec, new RoomerError(err.code, err.serverMessage, "join", rec.name));
        return;
      }
      this.opened(rec, parseMembers(payload));
    });
  }

  leave(rec) {
    if (rec.state === "closed" || rec.state === "leaving") return;
    if (this.state === "open" && this.sendable()) {
      rec.state = "leaving";
      if (rec.space.rooms.get(rec.name) === rec) rec.space.rooms.delete(rec.name);
      if (!this.v2) {
        this.leaving.push(rec);
        this.write("", rec.name, "leave", EMPTY, "");
        return;
      }
      this.internalAsk(rec.space.name, rec.name, "leave", (payload, err) => {
        if (err && err !== LOST) this.kept(rec, infoOf(err, "leave"));
        else this.finish(rec, null, true); // left (or with the connection)
      });
    } else {
      // Not joined on a live socket: nothing to tell the server, unless a session it
      // holds resumes with this client still in the room.
      if (rec.state === "suspended" || rec.state === "joining") {
        this.owe(rec.space.name, rec.name, "leave");
      }
      this.finish(rec, null, true);
    }
  }

  /** Send what waits in the queue, at most ``flushRate`` messages a second (the first
   * second's worth at once): a queue of hundreds flushed in one go would pass the
   * server's rate limit (200 frames/s by default) and lose its tail. Sends made meanwhile
   * queue behind it, so the order holds. */
  flush() {
    clearTimeout(this.flushTimer);
    this.flushTimer = null;
    const rate = this.options.flushRate;
    if (rate > 0) {
      const now = Date.now();
      this.tokens = Math.min(rate, this.tokens + ((now - this.tokensAt) * rate) / 1000);
      this.tokensAt = now;
    }
    while (this.queue.length && this.state === "open" && this.sendable() &&
           (rate === 0 || this.tokens >= 1)) {
      const item = this.queue.shift();
      if (rate > 0) this.tokens -= 1;
      if (item.ask) {
        item.ask.queued = null;
        if (item.rec.state === "closed" || item.rec.state === "leaving") {
          item.ask.fail(new RoomerError("closed", "the room is closed", item.event,
            item.rec.name));
        } else {
          this.sendAsk(item.ask, item.rec.space.name, item.rec.name, item.event,
            item.payload, item);
        }
      } else if (item.rec.state === "closed" || item.rec.state === "leaving") {
        this.dropped(item, "closed");
      } else {
        this.write(item.rec.space.name, item.rec.name, item.event, item.payload, item.dst,
          EVENT, 0, item);
      }
    }
    if (this.queue.length && this.state === "open") {
      this.flushTimer = setTimeout(() => this.flush(), Math.max(1, Math.ceil(1000 / rate)));
    }
  }

  send(rec, event, payload, dst) {
    checkName("event", event);
    if (SERVER_EVENTS.has(event) || LOCAL_EVENTS.has(event) || GAME_EVENTS.has(event) ||
        (this.v2 && NAMESPACE_EVENTS.has(event))) {
      throw new TypeError(`roomer: "${event}" is a reserved event name`);
    }
    if (typeof dst !== "string") dst = dst == null ? "" : String(dst);
    const body = toBytes(payload);
    const item = { rec, event, dst, payload: body };
    if (rec.state === "closed" || rec.state === "leaving" || this.state === "closed") {
      this.dropped(item, "closed");
    } else if (this.state === "open" && this.sendable() && !this.queue.length) {
      this.write(rec.space.name, rec.name, event, body, dst, EVENT, 0, item);
    } else if (this.queue.length < this.options.sendQueueLimit) {
      // Encoded when sent, with the codec of the connection that sends it; copied now,
      // so the caller may reuse its buffer. Behind a queue being flushed, it waits its turn.
      item.payload = body === EMPTY ? EMPTY : body.slice();
      this.queue.push(item);
    } else {
      this.dropped(item, "queue_full");
    }
  }

  sendable() {
    return this.ws !== null && this.ws.readyState === 1; // WebSocket.OPEN
  }

  /** Write a message on the open socket (nothing if there is none). ``item``: the send
   * or ask of the application it is, which a drop before it was written queues again. */
  write(namespace, room, event, payload, dst, kind = EVENT, id = 0, item = null) {
    if (!this.sendable()) return;
    const body = this.codec.frame(kind, id, namespace, room, event, dst, payload);
    if (this.options.coalesce && this.batches && !pageHidden()) {
      this.hold(body, item);
      return;
    }
    if (this.held.length) this.release(); // the page was hidden meanwhile: in order still
    this.ws.send(body);
  }

  // ---- coalescing (the coalesce option, docs/protocol.md §13) ----------------------------

  /** Keep ``body`` for the next frame, behind what is held (so the order holds whatever
   * sends it); a batch that is full goes at once, and one too large for this body goes
   * before it. */
  hold(body, item) {
    const size = 4 + body.length;
    if (this.held.length && this.heldBytes + size > BATCH_BYTES) this.release();
    this.held.push({ body, item, tail: item ? item.payload.length : 0 });
    this.heldBytes += size;
    if (this.held.length >= BATCH_ENTRIES || this.heldBytes >= BATCH_BYTES) {
      this.release();
    } else if (this.frameTimer === null) {
      // Whichever comes first writes, and cancels the other.
      const write = () => this.release();
      this.frameTimer = setTimeout(write, FRAME_MS);
      if (typeof requestAnimationFrame === "function") {
        this.frameRequest = requestAnimationFrame(write);
      }
    }
  }

  /** Write what is held: one message as itself, more as one batch. On a socket that is
   * closing it stays held: its close queues it again (requeueHeld). */
  release() {
    this.cancelFrame();
    if (!this.held.length || !this.sendable()) return;
    const held = this.held;
    const size = this.heldBytes;
    this.held = [];
    this.heldBytes = 0;
    this.ws.send(held.length === 1 ? held[0].body : joinBatch(held.map((h) => h.body), size));
  }

  cancelFrame() {
    clearTimeout(this.frameTimer);
    this.frameTimer = null;
    if (this.frameRequest !== null) {
      cancelAnimationFrame(this.frameRequest);
      this.frameRequest = null;
    }
  }

  /** The socket went with messages held, never written: the application's sends and asks
   * are queued again, ahead of what was queued since, as if sent while disconnected (past
   * sendQueueLimit the newest are refused, as a send while disconnected is). The client's
   * own (acks, joins, answers to the server's asks) go with the socket, as they would
   * have if written: the connection's loss takes care of them. */
  requeueHeld() {
    this.cancelFrame();
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    const back = [];
    for (const { body, item, tail } of held) {
      if (item === null) continue;
      if (item.ask) {
        if (item.ask.done || this.asks.get(item.ask.id) !== item.ask) continue;
        this.asks.delete(item.ask.id);
        item.ask.id = 0;
        item.ask.queued = item;
      }
      // The payload as it was encoded: the caller may have reused its buffer since.
      item.payload = tail ? body.subarray(body.length - tail) : EMPTY;
      back.push(item);
    }
    if (!back.length) return;
    this.queue = back.concat(this.queue);
    while (this.queue.length > this.options.sendQueueLimit) {
      const item = this.queue.pop();
      if (item.ask) {
        item.ask.queued = null;
        item.ask.fail(new RoomerError("queue_full", "the send queue is full", item.event,
          item.rec.name));
      } else {
        this.dropped(item, "queue_full");
      }
    }
  }

  dropped(item, reason) {
    const info = {
      room: item.rec.name, event: item.event, payload: item.payload, dst: item.dst, reason,
    };
    if (!emit(item.rec, "dropped", info) && !emit(this.root, "dropped", info)) {
      console.warn(`roomer: dropped ${item.event} to ${item.rec.name} (${reason})`);
    }
  }

  // ---- protocol v2: namespaces ---------------------------------------------------------

  needV2(what) {
    if (!this.v2) {
      throw new Error(`roomer: ${what} need protocol v2: roomer(url, {protocol: "v2"})`);
    }
  }

  namespace(name) {
    this.needV2("namespaces");
    if (typeof name !== "string") throw new TypeError("roomer: a namespace name is a string");
    let space = this.spaces.get(name);
    if (!space) {
      if (this.state === "closed") {
        return Promise.reject(new RoomerError("closed", "the connection is closed",
          "connect"));
      }
      space = newSpace(this, name);
      this.spaces.set(name, space);
      // Otherwise it is connected with the others as soon as the connection is up.
      if (this.state === "open") this.connectSpace(space);
    }
    return space.root.room.ready();
  }

  connectSpace(space) {
    const root = space.root;
    if (root.state !== "joining" && root.state !== "suspended") return;
    this.internalAsk(space.name, ROOT, "connect", (payload, err) => {
      if (err === LOST || root.state === "closed") return;
      if (err) {
        // Refused (at first, or when connecting again after a reconnection): told once,
        // as a refused join is, then the namespace and its rooms close.
        const info = infoOf(err, "connect");
        if (!emit(root, "error", info) && root.waiters.length === 0) {
          emitError(this.root, info);
        }
        this.closeSpace(space, new RoomerError(err.code, err.serverMessage, "connect",
          ROOT));
        return;
      }
      this.opened(root, [this.id]);
    });
  }

  disconnectSpace(space) {
    this.needV2("namespaces");
    if (space === this.space) {
      throw new Error("roomer: the default namespace cannot be left: close() instead");
    }
    if (this.spaces.get(space.name) !== space) return Promise.resolve();
    if (!(this.state === "open" && this.sendable())) {
      // Not on a live socket: nothing to tell the server (but a session that resumes).
      this.owe(space.name, ROOT, "disconnect");
      this.closeSpace(space, null);
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      this.internalAsk(space.name, ROOT, "disconnect", (payload, err) => {
        if (err && err !== LOST) {
          reject(err);
          return;
        }
        this.closeSpace(space, null);
        resolve();
      });
    });
  }

  /** The namespace is gone (left, refused, or the connection closed for good): its rooms
   * close; left (``error`` null) they lose their handlers as a left room does. */
  closeSpace(space, error) {
    if (this.spaces.get(space.name) === space) this.spaces.delete(space.name);
    for (const rec of [...space.rooms.values()]) {
      if (rec !== space.root) this.finish(rec, error, error === null);
    }
    this.finish(space.root, error, error === null);
  }

  // ---- protocol v2: asks ---------------------------------------------------------------

  /** Send an ask on this socket; ``entry.settle(payload, error)`` gets its answer. */
  sendAsk(entry, namespace, room, event, payload, item = null) {
    let id = this.nextAskId;
    while (this.asks.has(id)) id = (id % MAX_ASK_ID) + 1; // unique among those waiting
    this.nextAskId = (id % MAX_ASK_ID) + 1;
    entry.id = id;
    this.asks.set(id, entry);
    this.write(namespace, room, event, payload, "", ASK, id, item);
  }

  /** An ask of this client's own (join, leave, connect, disconnect): sent at once on the
   * open socket, answered by the server in order, or told LOST with the socket. A join
   * carries its options (a game room's). */
  internalAsk(namespace, room, event, apply) {
    const rec = event === "join" ? this.spaces.get(namespace)?.rooms.get(room) : undefined;
    this.sendAsk({ internal: true, settle: apply, timer: null, namespace, room, event },
      namespace, room, event, rec ? rec.options : EMPTY);
  }

  // ---- protocol v2: game rooms (docs/protocol.md §10) ----------------------------------

  /** A create or join-or-create, once connected: its Room, put under its id when the
   * answer comes (before any later message of the room is dispatched). */
  async findRoom(space, event, type, options) {
    this.needV2("game rooms");
    checkName("room type", type);
    const body = toBytes(options ?? {}).slice();
    await space.root.room.ready();
    const answer = await new Promise((resolve, reject) => {
      if (!(this.state === "open" && this.sendable())) {
        reject(new RoomerError("disconnected", "the connection was lost", event, type));
        return;
      }
      this.sendAsk({
        internal: false, timer: null, settle: (payload, err) => (err ? reject(err)
          : resolve(payload)),
      }, space.name, type, event, body);
    });
    const info = JSON.parse(text(answer));
    let rec = space.rooms.get(info.room);
    if (!rec) {
      // Joined again after a reconnection with the same options, as a join by id.
      rec = newRecord(this, info.room, space, body);
      space.rooms.set(info.room, rec);
    }
    this.opened(rec, info.members);
    return rec.room;
  }

  async watchRooms(space, type, options) {
    this.needV2("room lists");
    checkName("room type", type);
    if (typeof options !== "object" || options === null) {
      throw new TypeError("roomer: watchRooms options must be an object");
    }
    const old = space.watches.get(type);
    const watch = new RoomWatch(this, space, type, options.filter ?? {});
    space.watches.set(type, watch);
    if (old) old.closed = true;
    await space.root.room.ready();
    await watch.start();
    return watch;
  }

  ask(rec, event, payload, options) {
    this.needV2("asks");
    checkName("event", event);
    if (SERVER_EVENTS.has(event) || LOCAL_EVENTS.has(event) || NAMESPACE_EVENTS.has(event) ||
        GAME_EVENTS.has(event)) {
      throw new TypeError(`roomer: "${event}" is a reserved event name`);
    }
    if (typeof options !== "object" || options === null) {
      throw new TypeError("roomer: ask options must be an object");
    }
    const timeout = options.timeout ?? 5000;
    if (typeof timeout !== "number" || !(timeout >= 0)) {
      throw new TypeError("roomer: options.timeout must be a number of ms >= 0");
    }
    const body = toBytes(payload);
    return new Promise((resolve, reject) => {
      const entry = { internal: false, id: 0, timer: null, queued: null, done: false };
      entry.settle = (answer, err) => {
        if (entry.done) return;
        entry.done = true;
        clearTimeout(entry.timer);
        if (err) reject(err);
        else resolve(answer);
      };
      entry.fail = (err) => entry.settle(null, err);
      if (rec.state === "closed" || rec.state === "leaving" || this.state === "closed") {
        entry.fail(new RoomerError("closed", "the room is closed", event, rec.name));
        return;
      }
      if (timeout > 0 && Number.isFinite(timeout)) {
        entry.timer = setTimeout(() => {
          // No answer in time: nothing waits for it any more (a late one is counted).
          if (entry.id && this.asks.get(entry.id) === entry) this.asks.delete(entry.id);
          if (entry.queued) {
            const at = this.queue.indexOf(entry.queued);
            if (at >= 0) this.queue.splice(at, 1);
            entry.queued = null;
          }
          entry.fail(new RoomerError("timeout", `no answer to '${event}' within ${timeout} ms`,
            event, rec.name));
        }, timeout);
      }
      if (this.state === "open" && this.sendable() && !this.queue.length) {
        this.sendAsk(entry, rec.space.name, rec.name, event, body, { rec, event, dst: "",
          payload: body, ask: entry });
      } else if (this.queue.length < this.options.sendQueueLimit) {
        entry.queued = { rec, event, dst: "", payload: body === EMPTY ? EMPTY : body.slice(),
          ask: entry };
        this.queue.push(entry.queued);
      } else {
        entry.fail(new RoomerError("queue_full", "the send queue is full", event, rec.name));
      }
    });
  }

  pendingAsks() {
    let queued = 0;
    for (const item of this.queue) if (item.ask) queued += 1;
    return this.asks.size + queued;
  }

  /** The socket is gone: every ask waiting on it is answered by ``error()`` (users'
   * asks) or LOST (internal ones). */
  dropAsks(error) {
    const asks = [...this.asks.values()];
    this.asks.clear();
    for (const entry of asks) entry.settle(null, entry.internal ? LOST : error());
  }

  answered(msg) {
    const entry = this.asks.get(msg.id);
    if (!entry) {
      this.unknownReplies += 1;
      return;
    }
    this.asks.delete(msg.id);
    this.settled = true; // an answer: what awaited it may be waiting
    if (msg.kind === REPLY) {
      entry.settle(msg.payload, null);
      return;
    }
    let code = "malformed";
    let message = "the error reply's payload is not its JSON object";
    try {
      const info = JSON.parse(text(msg.payload));
      if (info && typeof info === "object" && info.code !== undefined) {
        code = String(info.code);
        message = String(info.message ?? "");
      }
    } catch {
      // code and message say so
    }
    entry.settle(null, new RoomerError(code, message, msg.event, msg.room));
  }

  /** The server asks: this room's onAsk handler of the event answers, on the socket the
   * ask came on (ids are that socket's). */
  asked(space, msg) {
    const ws = this.ws;
    const answer = (kind, body) => {
      if (ws === this.ws) this.write(msg.namespace, msg.room, msg.event, body, "", kind, msg.id);
    };
    const refuse = (code, message) => answer(ERROR_REPLY,
      utf8.encode(JSON.stringify({ code, message })));
    const failed = (err) => {
      if (err instanceof RoomerError) {
        refuse(err.code, err.serverMessage);
      } else {
        console.error(`roomer: the ask handler of "${msg.event}" failed:`, err);
        refuse("handler_error", "internal error");
      }
    };
    const rec = space && space.rooms.get(msg.room);
    const fn = rec && rec.state !== "closed" ? rec.askHandlers.get(msg.event) : undefined;
    if (!fn) {
      refuse("no_handler", `nothing answers '${msg.event}'`);
      return;
    }
    let result;
    try {
      result = fn(msg.payload, msg.src);
    } catch (err) {
      failed(err);
      return;
    }
    Promise.resolve(result).then((value) => {
      let body;
      try {
        body = toBytes(value);
      } catch (err) {
        failed(err);
        return;
      }
      answer(REPLY, body);
    }, failed);
  }
}

/** A live list of the game rooms of one type (``room.watchRooms(type)``). */
class RoomWatch {
  constructor(link, space, type, filter) {
    this.link = link;
    this.space = space;
    this.type = type;
    this.filter = filter;
    this.list = new Map();
    this.handlers = [];
    this.closed = false;
  }

  /** Ask for the list (again after a reconnection): it replaces what was known. */
  start() {
    return new Promise((resolve, reject) => {
      const body = toBytes(this.filter);
      this.link.sendAsk({
        internal: false, timer: null, settle: (payload, err) => {
          if (err) {
            if (this.space.watches.get(this.type) === this) this.space.watches.delete(this.type);
            reject(err);
            return;
          }
          const fresh = new Map(JSON.parse(text(payload)).rooms.map((r) => [r.id, r]));
          const removed = [...this.list.keys()].filter((id) => !fresh.has(id));
          this.list = fresh;
          this.tell([...fresh.values()], removed);
          resolve(this);
        },
      }, this.space.name, this.type, "rooms.watch", body);
    });
  }

  apply(info) {
    if (this.closed) return;
    for (const entry of info.changed ?? []) this.list.set(entry.id, entry);
    for (const id of info.removed ?? []) this.list.delete(id);
    this.tell(info.changed ?? [], info.removed ?? []);
  }

  tell(changed, removed) {
    for (const fn of [...this.handlers]) {
      try {
        fn({ changed, removed });
      } catch (err) {
        report(err);
      }
    }
  }

  /** The rooms listed now: ``{id, type, clients, max_clients, locked, metadata}``. */
  rooms() { return [...this.list.values()]; }

  /** One listed room by id, or undefined. */
  room(id) { return this.list.get(id); }

  /** ``fn({changed, removed})`` after each update (the list holds it already). */
  on(event, fn) {
    if (event !== "change") throw new TypeError('roomer: a RoomWatch fires "change" only');
    if (typeof fn !== "function") throw new TypeError("roomer: a handler must be a function");
    this.handlers.push(fn);
    return this;
  }

  off(event, fn) {
    this.handlers = fn === undefined ? [] : this.handlers.filter((h) => h !== fn);
    return this;
  }

  /** Stop watching. */
  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.space.watches.get(this.type) === this) {
      this.space.watches.delete(this.type);
      if (this.link.state === "open" && this.link.sendable()) {
        this.link.internalAsk(this.space.name, this.type, "rooms.unwatch", () => {});
      } else {
        this.link.owe(this.space.name, this.type, "rooms.unwatch");
      }
    }
  }
}

/** A JSON object payload (a session's, a verdict's), or ``{code, message}`` saying it was
 * none. */
function parseInfo(payload, code) {
  try {
    const info = JSON.parse(text(payload));
    if (info && typeof info === "object" && !Array.isArray(info)) return info;
  } catch {
    // said below
  }
  return { code, message: text(payload) };
}

function parseMembers(payload) {
  try {
    return JSON.parse(text(payload));
  } catch {
    return [];
  }
}

// ---- entry point -------------------------------------------------------------------------

/**
 * Connect to a roomer server and return the root room. ``url`` defaults to ``/ws`` on
 * the page's host; ``http(s)://`` and relative URLs become ``ws(s)://``. With
 * ``{protocol: "v2"}`` it offers the ``roomer.v2.batch`` and ``roomer.v2`` subprotocols
 * (namespaces and asks; batch frames where the server has them), and with
 * ``{coalesce: true}`` as well it writes what it sends once per animation frame.
 */
export function roomer(url, options) {
  if (url !== undefined && typeof url !== "string" && !(url instanceof URL)) {
    throw new TypeError("roomer: the WebSocket URL must be a string");
  }
  const link = new Link(url === undefined ? defaultUrl() : String(url), readOptions(options));
  return link.root.room;
}

export default roomer;
