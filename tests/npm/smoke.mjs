// The npm package in Node.js against a real roomer server (tests/test_npm_package.py):
//
//   node smoke.mjs <ws-url> builtin   Node 22+: the built-in WebSocket
//   node smoke.mjs <ws-url> ws        the ws package passed in (what Node 20 needs)
//
// Two clients, one on protocol v1 and one on v2 (coalescing what it sends), join a room,
// send both ways (to the room and to one client), ask the server, and close; one more
// client finds no server and gives up. Prints one JSON line of what they saw.
// Exits non-zero on any failure, and by itself once both are closed (nothing left open).
import assert from "node:assert/strict";
import { createServer } from "node:net";
import roomer, { RoomerError, text } from "roomer";

const [url, mode] = process.argv.slice(2);
const options = {};
if (mode === "ws") {
  const { default: WebSocket } = await import("ws");
  // What Node before 22 says without one (removed here so a newer Node says it too).
  delete globalThis.WebSocket;
  assert.throws(() => roomer(url), (err) => err instanceof TypeError &&
    /WebSocket/.test(err.message) && /"ws"/.test(err.message));
  options.WebSocket = WebSocket;
} else {
  assert.equal(typeof globalThis.WebSocket, "function", `Node ${process.version}: no WebSocket`);
}
assert.throws(() => roomer("/ws", options), (err) => err instanceof TypeError &&
  /ws:\/\/host:port\/ws/.test(err.message));

const watchdog = setTimeout(() => {
  console.error("smoke.mjs: no end within 20 s");
  process.exit(2);
}, 20_000);

// A server that is not there: the failed attempts are told as events (the ws package
// throws an error event nobody listens to), then the room closes for good.
const nobody = await new Promise((resolve) => {
  const probe = createServer().listen(0, "127.0.0.1", () => {
    const { port } = probe.address();
    probe.close(() => resolve(port));
  });
});
const lonely = roomer(`ws://127.0.0.1:${nobody}/ws`, {
  ...options, reconnect: { initialDelay: 10, maxDelay: 10, maxAttempts: 1 },
});
const retried = new Promise((resolve) => lonely.on("reconnecting", (n, ms, closed) =>
  resolve(closed.code)));
const gaveUp = await lonely.ready().catch((err) => err);
assert.ok(gaveUp instanceof RoomerError && gaveUp.code === "closed", String(gaveUp));
assert.equal(await retried, 1006);

// B's frames, by their first byte: with coalesce and no requestAnimationFrame (Node),
// what it sends in one go leaves together on a timer, one batch (byte 4) where the
// server named roomer.v2.batch, else one frame a message.
const frames = [];
const sockets = [];
class Counted extends (options.WebSocket ?? globalThis.WebSocket) {
  constructor(...args) {
    super(...args);
    sockets.push(this);
  }

  send(data) {
    frames.push(data[0]);
    super.send(data);
  }
}
const a = roomer(url, options);
const b = roomer(url.replace(/^ws:/, "http:"), { ...options, protocol: "v2", coalesce: true,
  WebSocket: Counted });
const lobbyA = await a.joined("lobby");
const chat = new Promise((resolve) => lobbyA.onText("chat", (t, from) => resolve([t, from])));
const lobbyB = await b.joined("lobby");
assert.deepEqual(lobbyB.members().sort(), [a.id(), b.id()].sort());

lobbyB.send("chat", "héllo from node");
const [said, from] = await chat;
assert.deepEqual([said, from], ["héllo from node", b.id()]);

const burst = [];
const burstDone = new Promise((resolve) => lobbyA.onText("burst", (t) => {
  if (burst.push(t) === 5) resolve();
}));
const batches = sockets.at(-1).protocol === "roomer.v2.batch";
const before = frames.length;
for (let i = 0; i < 5; i++) lobbyB.send("burst", String(i));
assert.equal(frames.length - before, batches ? 0 : 5);
await burstDone;
assert.deepEqual(burst, ["0", "1", "2", "3", "4"]);
const burstFrames = frames.slice(before);
if (batches) {
  // One batch, an ack of B's maybe beside it.
  assert.ok(burstFrames.includes(4) && burstFrames.length <= 2, String(burstFrames));
} else {
  assert.ok(!burstFrames.includes(4), String(burstFrames));
}

const direct = new Promise((resolve) => lobbyB.on("dm", (payload, src) => resolve([payload, src])));
lobbyA.sendJSON("dm", { n: 1, list: [1, "two"] }, b.id());
const [payload, src] = await direct;
assert.ok(payload instanceof Uint8Array);
assert.deepEqual([JSON.parse(text(payload)), src], [{ n: 1, list: [1, "two"] }, a.id()]);
// What JSON would send as {} (or not at all) is refused, at the top or nested.
class Point { constructor(x) { this.x = x; } }
for (const payload of [new Map([[1, 2]]), new Set([1]), new Point(1), { nested: new Map() },
  [new Set()], () => 1, Symbol("s"), 1n]) {
  assert.throws(() => lobbyA.send("dm", payload), TypeError);
}
assert.throws(() => lobbyA.sendJSON("dm", new Map()), TypeError);
assert.throws(() => lobbyA.sendJSON("dm", () => 1), TypeError);

const where = text(await lobbyB.ask("where"));
const refused = await lobbyB.ask("refuse").catch((err) => err);
assert.ok(refused instanceof RoomerError);
assert.equal(refused.code, "sold_out");

const closed = Promise.all([a, b].map((root) => new Promise((resolve) => root.on("close", resolve))));
a.close();
b.close();
await closed;
clearTimeout(watchdog);
console.log(JSON.stringify({
  node: process.version, websocket: mode, said, where, refused: refused.code,
  open: [a.open(), b.open()],
}));
