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
 * JSON helpers.
 */

// ---- wire codec --------------------------------------------------------------------------
// Everything that knows the byte layout of a message lives here. A codec is
// { encode(room, event, dst, payloadBytes) -> Uint8Array,
//   decode(ArrayBuffer) -> { room, event, dst, src, payload: Uint8Array } | null }
// and is picked per connection by the WebSocket subprotocol the server accepted.

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();
const EMPTY = new Uint8Array(0);

/** Protocol v1: room, event, dst, src, payload, each a uint32 big-endian length + bytes. */
const v1 = Object.freeze({
  encode(room, event, dst, payload) {
    const fields = [utf8.encode(room), utf8.encode(event), utf8.encode(dst), EMPTY, payload];
    let size = 0;
    for (const f of fields) size += 4 + f.length;
    const out = new Uint8Array(size);
    const view = new DataView(out.buffer);
    let at = 0;
    for (const f of fields) {
      view.setUint32(at, f.length);
      out.set(f, at + 4);
      at += 4 + f.length;
    }
    return out;
  },
  decode(buffer) {
    const bytes = new Uint8Array(buffer);
    const view = new DataView(buffer);
    const fields = [];
    let at = 0;
    for (let i = 0; i < 5; i++) {
      if (bytes.length - at < 4) return null;
      const size = view.getUint32(at);
      at += 4;
      if (size > bytes.length - at) return null;
      fields.push(bytes.subarray(at, at + size));
      at += size;
    }
    if (at !== bytes.length) return null;
    return {
      room: fromUtf8.decode(fields[0]),
      event: fromUtf8.decode(fields[1]),
      dst: fromUtf8.decode(fields[2]),
      src: fromUtf8.decode(fields[3]),
      payload: fields[4],
    };
  },
});

/** Codecs by the subprotocol the server chose ("" = none requested: v1). */
const CODECS = { "": v1 };
/** Subprotocols offered at connect, best first (none yet: v1 needs none). */
const OFFERED = [];

// ---- names and payloads ------------------------------------------------------------------

const ROOT = "root";
/** Events the server handles or sends itself: a client may not send them (DESIGN §2-§3). */
const SERVER_EVENTS = new Set([
  "join", "leave", "join_ack", "leave_ack", "new_member", "member_left", "error", "open",
  "close",
]);
/** Events this client emits on its own: not sent, and a peer's message so named is ignored. */
const LOCAL_EVENTS = new Set(["reconnecting", "reconnected", "dropped"]);

/** Bytes of a payload: string (UTF-8), ArrayBuffer, any typed array or DataView; null or
 * undefined is empty; numbers and booleans are sent as text, other objects as JSON. */
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
  if (typeof payload === "object") return utf8.encode(JSON.stringify(payload));
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
  if (typeof location === "undefined") return url;
  const full = new URL(url, location.href);
  if (full.protocol === "http:") full.protocol = "ws:";
  else if (full.protocol === "https:") full.protocol = "wss:";
  return full.href;
}

const RECONNECT = Object.freeze({
  initialDelay: 500, maxDelay: 10000, factor: 2, jitter: 0.5, maxAttempts: Infinity,
  // 1000 and 1008 mean the server closed this client on purpose (a normal close, a kick,
  // a refused on_connect): coming back at once would undo that. roomer's own 1008 for a
  // receiver that fell behind ("slow consumer...", "write timeout") is worth a retry.
  shouldReconnect: (code, reason) => code !== 1000 &&
    (code !== 1008 || /^(slow consumer|write timeout)/.test(reason)),
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
  return {
    reconnect,
    sendQueueLimit: limit,
    connectTimeout: options.connectTimeout ?? 10000,
    WebSocket: options.WebSocket ?? globalThis.WebSocket,
  };
}

// ---- rooms -------------------------------------------------------------------------------
// A Room is the frozen public face; its state is a plain record the connection drives.
// Room states: joining (asked, no join_ack yet), open, suspended (was open, connection
// lost, will be joined again), leaving (leave sent), closed (for good).

function newRecord(link, name) {
  const rec = {
    link, name, state: "joining", everOpen: false, members: [], handlers: new Map(),
    waiters: [], room: null,
  };
  rec.room = new Room(rec);
  return rec;
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

  /** Join a room on this connection; returns its Room at once (queued until connected). */
  join(name) { return secret.get(this).link.join(name); }

  /** Join a room and wait: resolves with the Room on join_ack, rejects with a
   * RoomerError whose ``code`` is the server's (join_denied, too_many_rooms...). */
  joined(name) { return this.join(name).ready(); }

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

  /** Leave this room (root: close the connection); ``close`` fires on leave_ack. */
  leave() {
    const rec = secret.get(this);
    if (rec.name === ROOT && rec === rec.link.root) rec.link.close();
    else rec.link.leave(rec);
    return this;
  }

  /** Close the whole connection, every room, with no reconnection. */
  close() {
    secret.get(this).link.close();
    return this;
  }

  /** Leave every room but root. */
  purge() {
    const link = secret.get(this).link;
    for (const rec of [...link.rooms.values()]) if (rec !== link.root) link.leave(rec);
    return this;
  }

  /** The rooms of this connection by name (root included). */
  rooms() {
    const out = {};
    for (const [name, rec] of secret.get(this).link.rooms) out[name] = rec.room;
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

  /** send() with ``JSON.stringify(value)`` as the payload. */
  sendJSON(event, value, dst = "") {
    return this.send(event, JSON.stringify(value), dst);
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
  // A room's error nobody listens to goes to root; one root ignores too, to the console.
  if (emit(rec, "error", info)) return;
  if (rec !== rec.link.root && emit(rec.link.root, "error", info)) return;
  console.warn(`roomer: error in room ${rec.name}:`, info);
}

// ---- the connection ----------------------------------------------------------------------

class Link {
  constructor(url, options) {
    this.url = wsUrl(url);
    this.options = options;
    this.id = "";
    this.state = "connecting"; // connecting | open | reconnecting | closed
    this.ws = null;
    this.codec = v1;
    this.rooms = new Map();
    this.root = newRecord(this, ROOT);
    this.rooms.set(ROOT, this.root);
    this.pendingJoins = []; // records whose join was sent on this socket, oldest first
    this.leaving = []; // records whose leave was sent, waiting for leave_ack
    this.queue = []; // sends made while not connected
    this.attempt = 0;
    this.timer = null;
    this.connect(true);
  }

  connect(first) {
    this.timer = null;
    let ws;
    try {
      ws = OFFERED.length ? new this.options.WebSocket(this.url, OFFERED)
        : new this.options.WebSocket(this.url);
    } catch (err) {
      if (first) throw err; // a malformed URL: the caller's mistake, say so at once
      this.lost({ code: 1006, reason: String(err) });
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      if (ws === this.ws) this.codec = CODECS[ws.protocol] ?? v1;
    };
    ws.onmessage = (e) => {
      if (ws === this.ws) this.received(e.data);
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

  received(data) {
    const buffer = typeof data === "string" ? utf8.encode(data).buffer : data;
    const msg = this.codec.decode(buffer);
    if (msg === null) {
      console.warn("roomer: the server sent a malformed message; ignored");
      return;
    }
    const rec = this.rooms.get(msg.room);
    switch (msg.event) {
      case "join_ack":
        this.joinAck(msg);
        break;
      case "leave_ack":
        this.leaveAck(msg.room);
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
        this.serverError(msg);
        break;
      default:
        if (!rec || rec.state === "closed" || LOCAL_EVENTS.has(msg.event)) return;
        emit(rec, msg.event, msg.payload, msg.src);
    }
  }

  joinAck(msg) {
    let members;
    try {
      members = JSON.parse(text(msg.payload));
    } catch {
      members = [];
    }
    if (msg.room === ROOT && this.state !== "open") {
      this.connected(msg.src, members);
      return;
    }
    const at = this.pendingJoins.findIndex((r) => r.name === msg.room);
    let rec = at >= 0 ? this.pendingJoins.splice(at, 1)[0] : this.rooms.get(msg.room);
    if (!rec) {
      // A join the server made for this client (conn.join): it is a room like any other.
      rec = newRecord(this, msg.room);
      this.rooms.set(msg.room, rec);
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
    // Joins first, then what was queued: the server handles them in this order, so a
    // queued message for a room reaches it after the room is joined again.
    for (const rec of this.rooms.values()) {
      if (rec !== this.root && (rec.state === "joining" || rec.state === "suspended")) {
        this.write(rec.name, "join", EMPTY, "");
        this.pendingJoins.push(rec);
      }
    }
    const queued = this.queue;
    this.queue = [];
    for (const item of queued) {
      if (item.rec.state === "closed" || item.rec.state === "leaving") {
        this.dropped(item, "closed");
      } else {
        this.write(item.rec.name, item.event, item.payload, item.dst);
      }
    }
    settle(this.root);
    if (again) emit(this.root, "reconnected", id, previous);
    else emit(this.root, "open");
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
      emit(rec, "reconnected", self);
    } else if (!rec.everOpen) {
      rec.everOpen = true;
      settle(rec);
      emit(rec, "open");
    } else {
      settle(rec);
    }
  }

  leaveAck(name) {
    const at = this.leaving.findIndex((r) => r.name === name);
    if (at >= 0) this.finish(this.leaving.splice(at, 1)[0], null, true);
  }

  serverError(msg) {
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
        const rec = this.leaving.splice(at, 1)[0];
        if (this.rooms.has(rec.name)) {
          this.finish(rec, null, true);
        } else {
          rec.state = "open";
          this.rooms.set(rec.name, rec);
        }
        emitError(this.rooms.get(rec.name), info);
        return;
      }
    }
    emitError(this.rooms.get(msg.room) ?? this.root, info);
  }

  /** Close ``rec`` for good: close event if it ever opened, waiters rejected; a room
   * that was left also loses its handlers (as leave() did in the original client). */
  finish(rec, error, left = false) {
    if (rec.state === "closed") return;
    const wasOpen = rec.everOpen;
    rec.state = "closed";
    rec.closedBy = error ?? new RoomerError("closed", "the room is closed", "join", rec.name);
    if (this.rooms.get(rec.name) === rec) this.rooms.delete(rec.name);
    const p = this.pendingJoins.indexOf(rec);
    if (p >= 0) this.pendingJoins.splice(p, 1);
    settle(rec, rec.closedBy);
    if (wasOpen) emit(rec, "close");
    if (left) rec.handlers.clear();
  }

  lost(event) {
    clearTimeout(this.timer);
    this.timer = null;
    this.ws = null;
    this.pendingJoins = [];
    for (const rec of this.leaving) this.finish(rec, null, true); // left with the connection
    this.leaving = [];
    if (this.state === "closed") return;
    const policy = this.options.reconnect;
    const code = event.code ?? 1006;
    const reason = event.reason ?? "";
    if (policy && this.attempt < policy.maxAttempts && policy.shouldReconnect(code, reason)) {
      this.state = "reconnecting";
      for (const rec of this.rooms.values()) {
        if (rec.state === "open") {
          rec.state = "suspended";
          rec.oldId = this.id;
        }
      }
      const base = Math.min(policy.maxDelay, policy.initialDelay * policy.factor ** this.attempt);
      const delay = Math.round(base * (1 - policy.jitter * Math.random()));
      this.attempt += 1;
      this.timer = setTimeout(() => this.connect(false), delay);
      const closed = { code, reason };
      for (const rec of [...this.rooms.values()]) {
        emit(rec, "reconnecting", this.attempt, delay, closed);
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
    const queued = this.queue;
    this.queue = [];
    for (const item of queued) this.dropped(item, "closed");
    for (const rec of [...this.rooms.values()]) if (rec !== this.root) this.finish(rec, error);
    for (const rec of this.leaving) this.finish(rec, null, true);
    this.leaving = [];
    this.finish(this.root, error);
  }

  close() {
    if (this.state === "closed") return;
    const ws = this.ws;
    this.ws = null;
    this.shutdown(new RoomerError("closed", "closed by this client"));
    if (ws) ws.close(1000);
  }

  join(name) {
    checkName("room", name);
    const existing = this.rooms.get(name);
    if (existing) return existing.room;
    if (this.state === "closed") throw new Error("roomer: the connection is closed");
    const rec = newRecord(this, name);
    this.rooms.set(name, rec);
    if (this.state === "open") {
      this.write(name, "join", EMPTY, "");
      this.pendingJoins.push(rec);
    }
    // Otherwise it is joined with the others as soon as the connection is up.
    return rec.room;
  }

  leave(rec) {
    if (rec.state === "closed" || rec.state === "leaving") return;
    if (this.state === "open" && this.sendable()) {
      rec.state = "leaving";
      if (this.rooms.get(rec.name) === rec) this.rooms.delete(rec.name);
      this.leaving.push(rec);
      this.write(rec.name, "leave", EMPTY, "");
    } else {
      this.finish(rec, null, true); // not joined on a live socket: nothing to tell the server
    }
  }

  send(rec, event, payload, dst) {
    checkName("event", event);
    if (SERVER_EVENTS.has(event) || LOCAL_EVENTS.has(event)) {
      throw new TypeError(`roomer: "${event}" is a reserved event name`);
    }
    if (typeof dst !== "string") dst = dst == null ? "" : String(dst);
    const body = toBytes(payload);
    const item = { rec, event, dst, payload: body };
    if (rec.state === "closed" || rec.state === "leaving" || this.state === "closed") {
      this.dropped(item, "closed");
    } else if (this.state === "open" && this.sendable()) {
      this.write(rec.name, event, body, dst);
    } else if (this.queue.length < this.options.sendQueueLimit) {
      // Encoded when sent, with the codec of the connection that sends it; copied now,
      // so the caller may reuse its buffer.
      item.payload = body === EMPTY ? EMPTY : body.slice();
      this.queue.push(item);
    } else {
      this.dropped(item, "queue_full");
    }
  }

  sendable() {
    return this.ws !== null && this.ws.readyState === 1; // WebSocket.OPEN
  }

  write(room, event, payload, dst) {
    if (this.sendable()) this.ws.send(this.codec.encode(room, event, dst, payload));
  }

  dropped(item, reason) {
    const info = {
      room: item.rec.name, event: item.event, payload: item.payload, dst: item.dst, reason,
    };
    if (!emit(item.rec, "dropped", info) && !emit(this.root, "dropped", info)) {
      console.warn(`roomer: dropped ${item.event} to ${item.rec.name} (${reason})`);
    }
  }
}

// ---- entry point -------------------------------------------------------------------------

/**
 * Connect to a roomer server and return the root room. ``url`` defaults to ``/ws`` on
 * the page's host; ``http(s)://`` and relative URLs become ``ws(s)://``.
 */
export function roomer(url, options) {
  if (url !== undefined && typeof url !== "string" && !(url instanceof URL)) {
    throw new TypeError("roomer: the WebSocket URL must be a string");
  }
  const link = new Link(url === undefined ? defaultUrl() : String(url), readOptions(options));
  return link.root.room;
}

export default roomer;
