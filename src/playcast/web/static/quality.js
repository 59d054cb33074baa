// How the player's connection is doing, from the page's own view of it: a
// sign (good / weak / poor) on <body data-quality>, a plain-words notice the
// moment the picture stops while connected (no frame for STALL_MS), the
// worker told of it over the `input` channel ({"type":"picture",...}, which
// the worker logs and counts), and the figures the stats overlay shows
// (loss, round trip, freezes, and the worker's estimate of the link, which
// it sends on the same channel: {"type":"link",...}).
//
// The browser's own `freezeCount` counts a freeze only once the next frame
// comes, so a picture that stays frozen is never counted there; this module
// counts from the frames themselves, by the W3C rule, the open freeze too.

import { readStats } from "./stats.js";

export const STALL_MS = 2000;
const CHECK_MS = 250;
const POLL_MS = 1000;
// Better signs only after this long at the better level; worse ones at once.
const RECOVER_MS = 3000;
// What each sign allows (the worst figure decides).
const WEAK = { lossPct: 2, rttMs: 150, fps: 20 };
const POOR = { lossPct: 10, rttMs: 400, fps: 10 };
const LEVELS = ["good", "weak", "poor"];
const LABELS = { good: "Good connection", weak: "Weak connection", poor: "Poor connection" };

/** W3C's freeze rule at a frame rate: longer than max(3 frames, one + 150 ms). */
export function freezeThresholdMs(fps) {
  const frame = 1000 / Math.max(1, fps || 30);
  return Math.max(3 * frame, frame + 150);
}

/** The sign for one reading; `frozen` (the picture stopped) is always poor. */
export function levelFor({ lossPct, rttMs, fps, frozen }) {
  if (frozen) return "poor";
  const over = (limits) =>
    (lossPct != null && lossPct >= limits.lossPct) ||
    (rttMs != null && rttMs >= limits.rttMs) ||
    (fps != null && fps < limits.fps);
  if (over(POOR)) return "poor";
  if (over(WEAK)) return "weak";
  return "good";
}

export class ConnectionQuality {
  /**
   * @param {{body: HTMLElement, video: HTMLVideoElement, sign: HTMLElement, notice: HTMLElement}} ui
   * @param {() => ({getStats(): Promise<RTCStatsReport>}|null)} source the peer
   */
  constructor(ui, source) {
    this.ui = ui;
    this.source = source;
    this.channel = null;
    this.timers = [];
    this.reset();
  }

  reset() {
    this.running = false;
    this.lastFrameAt = 0; // performance.now() of the last frame presented
    this.frames = 0;
    this.frozen = false;
    this.freezes = 0; // W3C-rule freezes, ended or not
    this.frozenMs = 0; // in ended freezes
    this.level = "good";
    this.better = null; // {level, since} while a better sign waits out RECOVER_MS
    this.prev = null;
    this.reading = { lossPct: null, rttMs: null, fps: null };
    this.link = null; // the worker's last {"type":"link"} message
  }

  /** Connected: watch the frames, the stats and the worker's word. */
  start(channel) {
    this.stop();
    this.reset();
    this.running = true;
    this.attach(channel);
    this.lastFrameAt = performance.now();
    const video = this.ui.video;
    if ("requestVideoFrameCallback" in video) {
      const onFrame = (now, meta) => {
        if (!this.running) return;
        this.#frame(now, meta);
        video.requestVideoFrameCallback(onFrame);
      };
      video.requestVideoFrameCallback(onFrame);
    }
    this.timers.push(setInterval(() => this.#check(), CHECK_MS));
    this.timers.push(setInterval(() => this.#poll(), POLL_MS));
    this.#show("good");
  }

  stop() {
    this.running = false;
    this.timers.forEach(clearInterval);
    this.timers = [];
    this.#setFrozen(false, 0, false);
    delete this.ui.body.dataset.quality;
  }

  attach(channel) {
    if (!channel || channel === this.channel) return;
    this.channel = channel;
    channel.addEventListener("message", (ev) => this.#message(ev.data));
  }

  /** The figures the stats overlay shows. */
  summary() {
    const r = this.reading;
    const est = this.link && this.link.target_bps;
    const openMs = this.frozen ? performance.now() - this.lastFrameAt : 0;
    const copies = this.link && this.link.copies ? ` ×${this.link.copies + 1}` : "";
    return {
      quality: LABELS[this.level].replace(" connection", ""),
      estimate: est ? `${(est / 1e6).toFixed(2)} Mbit/s${copies}` : "–",
      encoding: (this.link && this.link.encoding) || "–",
      loss: r.lossPct == null ? "–" : `${r.lossPct.toFixed(1)} %`,
      freezes: `${this.freezes} (${((this.frozenMs + openMs) / 1000).toFixed(1)} s)`,
    };
  }

  #message(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg && msg.type === "link") this.link = msg;
  }

  #frame(now, meta) {
    const at = meta && meta.expectedDisplayTime ? meta.expectedDisplayTime : now;
    const gap = this.frames ? at - this.lastFrameAt : 0;
    if (gap > freezeThresholdMs(this.reading.fps)) {
      // A freeze already counted while open (a stall) is not counted twice.
      if (!this.frozen) this.freezes += 1;
      this.frozenMs += gap;
    }
    const stillMs = this.frozen ? gap : 0;
    this.frames += 1;
    this.lastFrameAt = at;
    if (this.frozen) this.#setFrozen(false, stillMs, true);
  }

  #check() {
    if (!this.running || !this.frames) return; // before the first frame: "starting"
    const still = performance.now() - this.lastFrameAt;
    if (!this.frozen && still >= STALL_MS) {
      this.freezes += 1;
      this.#setFrozen(true, still, true);
    }
    this.#judge();
  }

  #setFrozen(frozen, stillMs, tell) {
    const changed = frozen !== this.frozen;
    this.frozen = frozen;
    const { body, notice } = this.ui;
    if (frozen) body.dataset.picture = "frozen";
    else delete body.dataset.picture;
    notice.hidden = !frozen;
    // Set when shown, so a screen reader announces it (role="alert").
    notice.textContent = frozen
      ? "The picture has stopped: your connection is not getting the game through. Waiting for it to come back…"
      : "";
    if (changed && tell) {
      this.#tell({ type: "picture", state: frozen ? "frozen" : "moving", still_ms: Math.round(stillMs) });
    }
    if (!changed || !this.running) return;
    if (frozen) {
      this.#judge();
    } else {
      // Frames are back: the sign says what the figures say now, at once.
      this.better = null;
      this.#show(levelFor(this.reading));
    }
  }

  #tell(msg) {
    const ch = this.channel;
    if (ch && ch.readyState === "open") ch.send(JSON.stringify(msg));
  }

  async #poll() {
    const peer = this.source();
    if (!peer || !this.running) return;
    let report;
    try {
      report = await peer.getStats();
    } catch {
      return;
    }
    const cur = readStats(report);
    const prev = this.prev;
    this.prev = cur;
    if (!prev) return;
    const lost = cur.lost - prev.lost;
    const total = lost + (cur.received - prev.received);
    this.reading = {
      lossPct: total > 0 ? (100 * Math.max(0, lost)) / total : this.reading.lossPct,
      rttMs: cur.rttMs,
      fps: cur.at > prev.at ? ((cur.framesDecoded - prev.framesDecoded) * 1000) / (cur.at - prev.at) : null,
    };
    this.#judge();
  }

  #judge() {
    if (!this.running) return;
    const level = levelFor({ ...this.reading, frozen: this.frozen });
    const now = performance.now();
    if (LEVELS.indexOf(level) >= LEVELS.indexOf(this.level)) {
      this.better = null;
      this.#show(level);
    } else if (!this.better || this.better.level !== level) {
      this.better = { level, since: now };
    } else if (now - this.better.since >= RECOVER_MS) {
      this.better = null;
      this.#show(level);
    }
  }

  #show(level) {
    this.level = level;
    this.ui.body.dataset.quality = level;
    this.ui.sign.title = LABELS[level];
    this.ui.sign.setAttribute("aria-label", LABELS[level]);
  }
}
