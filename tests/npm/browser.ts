// The package in a page's TypeScript (the DOM library, no Node.js types; a bundler's
// module resolution): the global WebSocket and URL fit the types. Compiled, never run.
import roomer, { type Room, text } from "roomer";

export async function page(): Promise<string> {
  const root: Room = roomer();
  roomer("/ws", { WebSocket, protocol: "v2" });
  roomer("/ws", { protocol: "v2", coalesce: true });
  roomer(new URL("/ws", location.href), { WebSocket: window.WebSocket });
  const lobby = await root.joined("lobby");
  lobby.send("blob-bytes", await new Blob(["x"]).arrayBuffer());
  // @ts-expect-error a Blob is not sent as its bytes: it would arrive as {}
  lobby.send("blob", new Blob(["x"]));
  return new Promise((resolve) => lobby.on("chat", (payload) => resolve(text(payload))));
}
