// Every event a room emits, checked against its declared type: compiled with tsc (which
// checks ARITY against roomer.d.ts's RoomEvents), then run in Node against a real server
// (tests/test_npm_package.py; node events.js <ws-url>). The server runs the app of
// tests/browser/browser_v2_app.py, whose `drop-me` drops the connection as a network
// failure would (1011), and whose rooms named `closed-*` refuse to be joined. A socket of
// the ws package ended with terminate() sends no close frame: the server holds the
// session, as it does for a connection that really failed (docs/protocol.md §11).
//
// Each event fires at least once, each firing has as many arguments as its handler type
// declares, and each argument is of its declared type. Prints one JSON line of the counts.
import assert from "node:assert/strict";
import WebSocket from "ws";
import roomer, { type Room, type RoomEvents, RoomerError } from "roomer";

/** How many arguments each handler gets: tsc refuses this table if roomer.d.ts declares
 * another count, the run refuses it if roomer.js emits another. */
const ARITY: { [E in keyof RoomEvents]: Parameters<RoomEvents[E]>["length"] } = {
  open: 0,
  close: 0,
  new_member: 1,
  member_left: 1,
  error: 1,
  reconnecting: 3,
  reconnected: 2,
  dropped: 1,
  resumed: 1,
  lost: 2,
  member_dropped: 1,
  member_back: 1,
};
const EVENTS = Object.keys(ARITY) as (keyof RoomEvents)[];

const isString = (v: unknown) => typeof v === "string";
const isNumber = (v: unknown) => typeof v === "number";
const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null;
/** The arguments' types as roomer.d.ts declares them. */
const TYPES: { [E in keyof RoomEvents]: (args: unknown[]) => boolean } = {
  open: () => true,
  close: () => true,
  new_member: ([id]) => isString(id) && id !== "",
  member_left: ([id]) => isString(id) && id !== "",
  error: ([e]) => isObject(e) && isString(e.code) && isString(e.message) && isString(e.event),
  reconnecting: ([attempt, delay, closed]) => isNumber(attempt) && isNumber(delay) &&
    isObject(closed) && isNumber(closed.code) && isString(closed.reason),
  reconnected: ([id, previous]) => isString(id) && isString(previous) && id !== previous,
  dropped: ([d]) => isObject(d) && isString(d.room) && isString(d.event) &&
    d.payload instanceof Uint8Array && isString(d.dst) &&
    (d.reason === "queue_full" || d.reason === "closed"),
  resumed: ([id]) => isString(id) && id !== "",
  lost: ([code, message]) => code === "resume_failed" && isString(message),
  member_dropped: ([id]) => isString(id) && id !== "",
  member_back: ([id]) => isString(id) && id !== "",
};

interface Seen {
  room: string;
  event: string;
  args: unknown[];
}
const seen: Seen[] = [];

function record(room: Room, label: string): Room {
  for (const event of EVENTS) {
    room.on(event, (...args: unknown[]) => seen.push({ room: label, event, args }));
  }
  room.on("chat", (...args: unknown[]) => seen.push({ room: label, event: "chat", args }));
  return room;
}

/** Resolves once ``event`` fired ``count`` times in ``room``. */
function fired(room: string, event: string, count = 1): Promise<void> {
  return new Promise((resolve) => {
    const poll = () => {
      if (seen.filter((s) => s.room === room && s.event === event).length >= count) resolve();
      else setTimeout(poll, 10);
    };
    poll();
  });
}

const url = process.argv[2];
const watchdog = setTimeout(() => {
  console.error(`events: no end within 20 s; seen: ${JSON.stringify(seen)}`);
  process.exit(2);
}, 20_000);

/** A's sockets, the last one live: the test ends one as a failed network would. */
const sockets: WebSocket[] = [];
class Tracked extends WebSocket {
  constructor(address: string, protocols?: string | string[]) {
    super(address, protocols);
    sockets.push(this);
  }
}

const a = record(roomer(url, {
  WebSocket: Tracked, sendQueueLimit: 1,
  reconnect: { initialDelay: 50, maxDelay: 50, jitter: 0 },
}), "root");
const match = record(a.join("match"), "match");
await match.ready();
// B speaks v2: only v2 members are told of a member's dropped connection.
const b = roomer(url, { WebSocket, protocol: "v2" });
const matchB = await b.joined("match");
for (const event of ["member_dropped", "member_back"] as const) {
  matchB.on(event, (...args: unknown[]) => seen.push({ room: "matchB", event, args }));
}
await fired("match", "new_member");
matchB.send("chat", "hi");
await fired("match", "chat");

// error: a join the server refuses.
const refused = record(a.join("closed-door"), "closed-door");
assert.ok(await refused.ready().catch((err) => err) instanceof RoomerError);

// reconnecting, dropped (a queue of one, two sends while away), reconnected.
const firstId = a.id();
a.once("reconnecting", () => {
  match.send("chat", "queued");
  match.send("chat", "dropped");
});
a.send("drop-me");
await Promise.all([fired("root", "reconnected"), fired("match", "reconnected")]);
// lost: the server closed that connection, which ended its session, so the reconnection
// asked to resume it in vain (then came reconnected, with a new id).
await Promise.all([fired("root", "lost"), fired("match", "lost")]);

// resumed, member_dropped, member_back: a socket that ends with no close frame leaves the
// session held; A comes back into it with its id, and B is told A dropped and came back.
const heldId = a.id();
sockets[sockets.length - 1].terminate();
await Promise.all([fired("root", "resumed"), fired("match", "resumed"),
  fired("matchB", "member_back")]);
assert.equal(a.id(), heldId);
assert.deepEqual(seen.filter((s) => s.room === "matchB").map((s) => [s.event, s.args]),
  [["member_dropped", [heldId]], ["member_back", [heldId]]]);

// member_left, then close (a room left, then the connection).
matchB.leave();
await fired("match", "member_left");
match.leave();
await fired("match", "close");
b.close();
a.close();
await fired("root", "close");
clearTimeout(watchdog);

const problems: string[] = [];
for (const event of EVENTS) {
  if (!seen.some((s) => s.event === event)) problems.push(`${event} never fired`);
}
for (const { room, event, args } of seen) {
  const name = event as keyof RoomEvents;
  const [arity, typed] = event === "chat"
    ? [2, args[0] instanceof Uint8Array && isString(args[1])]
    : [ARITY[name], TYPES[name](args)];
  if (args.length !== arity) {
    problems.push(`${room}: ${event} fired with ${args.length} arguments, declared ${arity}`);
  } else if (!typed) {
    problems.push(`${room}: ${event} fired with arguments of other types than declared: ` +
      JSON.stringify(args));
  }
}
assert.deepEqual(problems, []);
const reconnected = seen.filter((s) => s.event === "reconnected").map((s) => s.args);
assert.deepEqual(reconnected, [[a.id(), firstId], [a.id(), firstId]]);
assert.deepEqual(seen.filter((s) => s.event === "resumed").map((s) => s.args),
  [[a.id()], [a.id()]]);
const counts: Record<string, number> = {};
for (const { event } of seen) counts[event] = (counts[event] ?? 0) + 1;
console.log(JSON.stringify(counts));
