// Calls that throw at run time (or would give a handler other arguments than it takes)
// and so must not type-check: tsc fails on any `@ts-expect-error` here whose line
// type-checks (tests/test_npm_package.py). Compiled, never run.
import roomer, { type Room } from "roomer";

declare const room: Room;

export function payloads(): void {
  // @ts-expect-error a function payload throws a TypeError
  room.send("x", () => 1);
  // @ts-expect-error a Map would arrive as {}: it throws a TypeError
  room.send("x", new Map([[1, 2]]));
  // @ts-expect-error a Set likewise
  room.send("x", new Set([1]));
  // @ts-expect-error a Promise likewise
  room.send("x", Promise.resolve(1));
  // @ts-expect-error a symbol throws a TypeError
  room.send("x", Symbol("s"));
  // @ts-expect-error a bigint throws a TypeError
  room.send("x", 1n);
  // @ts-expect-error an ask's payload is converted as send()'s
  void room.ask("x", new Map());
  // @ts-expect-error so is an onAsk handler's answer
  room.onAsk("x", () => new Set());
  // @ts-expect-error the event name comes first
  room.send(new Uint8Array());
}

export function handlers(): void {
  // @ts-expect-error open and close get no arguments
  room.on("open", (payload: Uint8Array, senderId: string) => [payload, senderId]);
  // @ts-expect-error likewise
  room.once("close", (payload: Uint8Array) => payload);
  // @ts-expect-error new_member gets the member's id, a string
  room.on("new_member", (payload: Uint8Array) => payload);
  // @ts-expect-error member_left likewise
  room.on("member_left", (id: string, senderId: string) => [id, senderId]);
  // @ts-expect-error reconnected gets two arguments, not three
  room.on("reconnected", (id: string, previousId: string, more: string) => [id, previousId, more]);
  // @ts-expect-error reconnecting's are numbers and a CloseInfo
  room.on("reconnecting", (attempt: string) => attempt);
  // @ts-expect-error error gets a ServerError, not a string
  room.on("error", (message: string) => message);
  // @ts-expect-error resumed gets the id, a string
  room.on("resumed", (id: number) => id);
  // @ts-expect-error lost gets a code and a message, no more
  room.on("lost", (code: string, message: string, more: string) => [code, message, more]);
  // @ts-expect-error member_dropped gets the member's id, a string
  room.on("member_dropped", (payload: Uint8Array) => payload);
  // @ts-expect-error dropped gets one Dropped
  room.on("dropped", (room: string, event: string) => [room, event]);
  // @ts-expect-error a custom event gets (payload, senderId): no third argument
  room.on("chat", (payload: Uint8Array, senderId: string, extra: number) => extra);
  // @ts-expect-error and its payload is bytes, not text (onText decodes)
  room.on("chat", (text: string) => text);
}

export function options(): void {
  // @ts-expect-error a WebSocket option is a constructor
  roomer("ws://127.0.0.1/ws", { WebSocket: {} });
  // @ts-expect-error protocol is "v1" or "v2"
  roomer("ws://127.0.0.1/ws", { protocol: "v3" });
  // @ts-expect-error reconnect is a boolean or ReconnectOptions
  roomer("ws://127.0.0.1/ws", { reconnect: "always" });
  // @ts-expect-error resume is a boolean
  roomer("ws://127.0.0.1/ws", { resume: "yes" });
  // @ts-expect-error coalesce is a boolean
  roomer("ws://127.0.0.1/ws", { protocol: "v2", coalesce: 1 });
}
