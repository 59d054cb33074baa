// The page's side of the signaling socket (/ws/client): one JSON object per
// text frame, as PROTOCOL.md describes. Heartbeats are answered here, at
// once, so a busy page never misses a ping; everything else goes to the app.

export const DEFAULT_GAME = "com.supercell.clashroyale";

export function clientSocketUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws/client`;
}

export class Signaling {
  /**
   * @param {string} url the /ws/client endpoint
   * @param {{onOpen: () => void, onMessage: (msg: object) => void, onClose: (ev: CloseEvent) => void,
   *          onError?: (msg: object) => void}} handlers
   */
  constructor(url, handlers) {
    this.handlers = handlers;
    this.closed = false;
    this.ws = new WebSocket(url);
    this.ws.addEventListener("open", () => this.handlers.onOpen());
    this.ws.addEventListener("message", (ev) => this.#receive(ev));
    // "error" is always followed by "close"; one place handles both.
    this.ws.addEventListener("close", (ev) => {
      this.closed = true;
      this.handlers.onClose(ev);
    });
  }

  #receive(ev) {
    if (typeof ev.data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      console.warn("signaling: not JSON", ev.data);
      return;
    }
    if (!msg || typeof msg.type !== "string") return;
    if (msg.type === "ping") {
      this.send({ type: "pong", ts: msg.ts });
      return;
    }
    if (msg.type === "error") {
      // The server keeps the socket open after most errors: a bug report, not
      // an end. The one that matters to the app (resume_failed) goes on to it.
      console.warn(`signaling error ${msg.code}: ${msg.message}`);
      if (this.handlers.onError) this.handlers.onError(msg);
      return;
    }
    this.handlers.onMessage(msg);
  }

  /** Queue one message; false when the socket is no longer open. */
  send(msg) {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  close() {
    this.closed = true;
    if (this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "bye");
  }
}
