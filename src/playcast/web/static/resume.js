// Resuming a session over a new signaling socket (the server's --resume-grace).
// The video and the touches flow peer to peer; the socket only carries
// control. So when it drops mid-session the page keeps playing and reconnects
// with the token `assigned` (then each `resumed`) gave it, for up to the grace.
// Timing: quick first retries (a blip, a node restarting behind a load
// balancer), then an exponential backoff with jitter, each attempt bounded.

const QUICK_MS = [0, 100, 250, 500];
const BACKOFF_START_MS = 1000;
const BACKOFF_CAP_MS = 4000;
/** An attempt that has neither failed nor been answered by then is dropped. */
export const ATTEMPT_TIMEOUT_MS = 3000;
/** At most this many messages wait for the new socket (inputs are coalesced). */
const OUTBOX_LIMIT = 64;

/** Delay before attempt number `n` (0 is the first, at once). */
export function retryDelayMs(n) {
  if (n < QUICK_MS.length) return QUICK_MS[n];
  const backoff = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * 2 ** (n - QUICK_MS.length));
  return backoff * (0.75 + Math.random() * 0.25); // jitter: pages cut together spread out
}

/**
 * What the page says to the server while its socket is down (candidates, an
 * answer, webrtc_connected, activity reports), sent in order once resumed.
 * Activity reports only say "still here": the latest stands for all of them.
 */
export class Outbox {
  constructor() {
    this.messages = [];
  }

  push(msg) {
    if (msg.type === "input") this.messages = this.messages.filter((m) => m.type !== "input");
    if (this.messages.length >= OUTBOX_LIMIT) {
      console.warn("signaling: outbox full while reconnecting, dropped", msg.type);
      return;
    }
    this.messages.push(msg);
  }

  /** Hand every held message to `send`, in order, and forget them. */
  flush(send) {
    const messages = this.messages;
    this.messages = [];
    for (const msg of messages) send(msg);
  }
}
