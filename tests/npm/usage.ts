// Every documented call, option and event of roomer.d.ts (README "Browser client
// (roomer.js)"), imported by the package's name: tsc --strict must accept it all
// (tests/test_npm_package.py). Compiled, never run.
import WebSocket from "ws";
import roomer, {
  type AskAnswer,
  type AskOptions,
  type CloseInfo,
  type Dropped,
  type JSONPayload,
  type Payload,
  type ReconnectOptions,
  type Room,
  type RoomClosed,
  type RoomEntry,
  type RoomWatch,
  type RoomerOptions,
  type ServerError,
  RoomerError,
  roomer as named,
  text,
} from "roomer";

const reconnect: ReconnectOptions = {
  initialDelay: 500,
  maxDelay: 10_000,
  factor: 2,
  jitter: 0.5,
  maxAttempts: Infinity,
  shouldReconnect: (code: number, reason: string) => code !== 1000 && reason !== "bye",
};
const options: RoomerOptions = {
  protocol: "v1",
  reconnect,
  resume: true,
  coalesce: false,
  sendQueueLimit: 256,
  connectTimeout: 10_000,
  WebSocket,
};

export async function v1(): Promise<void> {
  const root: Room = roomer("ws://127.0.0.1:8080/ws", options);
  named(new URL("ws://127.0.0.1:8080/ws"), { reconnect: false });
  named(undefined, { reconnect: true, WebSocket });
  named(undefined, { reconnect: false, resume: true, WebSocket });

  // rooms
  const lobby: Room = root.join("lobby");
  const match: Room = await root.joined("match");
  const ready: Room = await lobby.ready();
  const rooms: Readonly<Record<string, Room>> = root.rooms();
  const state: [string, string, string, boolean, string[]] = [
    lobby.name, lobby.namespaceName, root.id(), ready.open(), match.members(),
  ];
  lobby.leave();
  root.purge();

  // sending: every kind of payload, to the room and to one client
  const move: { x: number; y: number } = { x: 1, y: 2 };
  interface Move { x: number; y: number }
  const typed: Move = move;
  lobby
    .send("chat", "hello")
    .send("bin", new Uint8Array([1, 2]))
    .send("bin", new Uint16Array([258]))
    .send("bin", new Uint8Array([7]).buffer)
    .send("bin", new DataView(new ArrayBuffer(2)))
    .send("none")
    .send("none", null)
    .send("num", 42)
    .send("bool", true)
    .send("obj", move)
    .send("obj", typed)
    .send("list", [1, "two", null])
    .send("date", new Date())
    .send("chat", "psst", root.id())
    .sendJSON("state", { x: 1, list: [1, "two", null] })
    .sendJSON("state", [1, 2], root.id());
  const payloads: Payload[] = ["x", 1, true, null, undefined, new Uint8Array(), move];
  const json: JSONPayload = move;

  // events: the room's own, and custom ones
  lobby
    .on("open", () => {})
    .on("close", () => {})
    .on("new_member", (memberId: string) => lobby.sendJSON("welcome", { memberId }, memberId))
    .on("member_left", (memberId: string) => memberId.length)
    .on("error", (error: ServerError) => [error.code, error.message, error.event])
    .on("reconnecting", (attempt: number, delayMs: number, closed: CloseInfo) =>
      [attempt, delayMs, closed.code, closed.reason])
    .on("reconnected", (id: string, previousId: string) => [id, previousId])
    .on("dropped", (dropped: Dropped) =>
      [dropped.room, dropped.event, dropped.payload, dropped.dst, dropped.reason])
    .on("resumed", (id: string) => id.length)
    .on("lost", (code: string, message: string) => [code, message])
    .on("member_dropped", (memberId: string) => memberId.length)
    .on("member_back", (memberId: string) => memberId.length)
    .once("resumed", (id) => id)
    .on("chat", (payload: Uint8Array, senderId: string) => [text(payload), senderId])
    .on("move", (payload) => payload.byteLength)
    .once("open", () => {})
    .once("reconnected", (id) => id)
    .once("chat", (payload, senderId) => [payload, senderId])
    .onJSON<{ x: number }>("state", (value, senderId) => [value.x, senderId])
    .onJSON("any", (value: unknown, senderId: string) => [value, senderId])
    .onText("chat", (t: string, senderId: string) => [t, senderId]);
  const eventName: string = "custom";
  lobby.on(eventName, (payload: Uint8Array, senderId: string) => [payload, senderId]);

  // the emitter methods
  const handler = (...args: unknown[]) => args;
  lobby.addListener("x", handler).removeListener("x", handler).off("x", handler).off("x").off();
  lobby.removeAllListeners("x").removeAllListeners().clearListeners(["open"]).clearListeners();
  const handlers: Function[] = [...lobby.listeners("x"), ...lobby.listeners()];
  const emitted: boolean = lobby.emit("chat", new Uint8Array(), "");

  // errors
  try {
    await root.joined("closed-room");
  } catch (err) {
    if (err instanceof RoomerError) {
      const fields: string[] = [err.name, err.code, err.serverMessage, err.event, err.room,
        err.message];
      void fields;
    }
  }
  const made = new RoomerError("join_denied", "no", "join", "closed-room");
  root.close();
  void [state, rooms, payloads, json, handlers, emitted, made];
}

export async function v2(): Promise<void> {
  const root = roomer("wss://example.test/ws", { protocol: "v2", coalesce: true, WebSocket });
  const chat: Room = await root.namespace("chat");
  const lobby = await chat.joined("lobby");
  const askOptions: AskOptions = { timeout: 2000 };
  const reply: Uint8Array = await lobby.ask("roll", "d6", askOptions);
  await lobby.ask("roll");
  await lobby.ask("roll", { sides: 6 }, { timeout: 0 });
  const answer: AskAnswer = "pong";
  lobby
    .onAsk("ping", (payload: Uint8Array, senderId: string) => [payload.length, senderId].join())
    .onAsk("later", async () => new Uint8Array([1]))
    .onAsk("fixed", () => answer)
    .offAsk("ping");
  const counts: number[] = [lobby.pendingAsks(), lobby.unknownReplies()];
  const space: string = chat.namespaceName;
  await chat.disconnect();
  void [reply, counts, space];
}

export async function gameRooms(): Promise<void> {
  const root = roomer("wss://example.test/ws", { protocol: "v2", WebSocket });
  const table: Room = await root.joinOrCreate("table", { mode: "duel" });
  const made: Room = await root.create("table:friends-42");
  const byId: Room = await root.joined(table.name, { name: "ada" });
  root.join(table.name, { name: "ada" });
  table.on("room.closed", (info: RoomClosed) => {
    const why: string[] = [info.code, info.message];
    void why;
  });
  const list: RoomWatch = await root.watchRooms("table", { filter: { mode: "duel" } });
  list.on("change", ({ changed, removed }) => {
    const entries: RoomEntry[] = changed;
    const gone: string[] = removed;
    void [entries, gone];
  });
  const first: RoomEntry | undefined = list.room(table.name);
  const seats: (number | null)[] = list.rooms().map((r) => r.max_clients);
  list.close();
  void [made, byId, first, seats, list.type];
}
