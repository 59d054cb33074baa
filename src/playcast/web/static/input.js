// Player input: pointer (mouse, pen, multi-touch) and keys, turned into the
// data-channel events the worker decodes (src/playcast/inputs.py):
//   {"type":"touch","action":"down|move|up|cancel","id":0..9,"x":0..1,"y":0..1}
//   {"type":"key","action":"down|up","key":KeyboardEvent.key}
// Keys a game's key map names become touches instead (keytouch.js).
// Coordinates are fractions of the picture itself, not of the <video> box,
// so the letterbox bars around a portrait stream never shift a tap.

// Ten fingers at once, ids 0..9: a phone's scrcpy server ignores an 11th
// (PointersState.MAX_POINTERS), so the page never sends one.
const MAX_POINTERS = 10;
const MAX_KEY_LENGTH = 32;

/** The picture's box inside an object-fit: contain <video>, in client pixels. */
export function pictureRect(video) {
  const box = video.getBoundingClientRect();
  const vw = video.videoWidth;
  const vh = video.videoHeight;
  if (!vw || !vh || !box.width || !box.height) return null;
  const scale = Math.min(box.width / vw, box.height / vh);
  const width = vw * scale;
  const height = vh * scale;
  return {
    left: box.left + (box.width - width) / 2,
    top: box.top + (box.height - height) / 2,
    width,
    height,
  };
}

/** Client coordinates as fractions of the picture (outside it: below 0 or above 1), or null. */
export function pictureFraction(video, clientX, clientY) {
  const r = pictureRect(video);
  if (!r) return null;
  return { x: (clientX - r.left) / r.width, y: (clientY - r.top) / r.height };
}

const clamp01 = (v) => Math.min(1, Math.max(0, v));
// Five decimals is a tenth of a pixel on a 4K picture; shorter messages, same aim.
const round5 = (v) => Math.round(v * 1e5) / 1e5;

export class InputCapture {
  /**
   * @param {HTMLVideoElement} video the surface that takes pointer input
   * @param {(event: object, byPlayer: boolean) => void} emit called with each input event
   * @param {(ev: KeyboardEvent) => boolean} isLocalKey keys the page keeps (e.g. the stats toggle)
   * @param {{handle: (ev: KeyboardEvent, action: string, capture: InputCapture) => boolean,
   *          release: () => void} | null} keyTouches turns mapped keys into touches (keytouch.js)
   */
  constructor(video, emit, isLocalKey, keyTouches = null) {
    this.video = video;
    this.emit = emit;
    this.isLocalKey = isLocalKey;
    this.keyTouches = keyTouches;
    this.enabled = false;
    // browser pointerId (or a mapped key's gesture) -> worker id 0..9: fingers
    // and keys share the ten ids, so a key never takes a finger's.
    this.slots = new Map();
    this.keys = new Set(); // keys held down, released on blur
    this.controller = null;
  }

  enable() {
    if (this.enabled) return;
    this.enabled = true;
    this.controller = new AbortController();
    const opts = { signal: this.controller.signal };
    const v = this.video;
    v.addEventListener("pointerdown", (e) => this.#down(e), opts);
    v.addEventListener("pointermove", (e) => this.#move(e), opts);
    v.addEventListener("pointerup", (e) => this.#end(e, "up"), opts);
    v.addEventListener("pointercancel", (e) => this.#end(e, "cancel"), opts);
    v.addEventListener("lostpointercapture", (e) => this.#end(e, "cancel"), opts);
    v.addEventListener("contextmenu", (e) => e.preventDefault(), opts); // long-press menu
    window.addEventListener("keydown", (e) => this.#key(e, "down"), opts);
    window.addEventListener("keyup", (e) => this.#key(e, "up"), opts);
    window.addEventListener("blur", () => this.releaseAll(), opts);
    document.addEventListener("visibilitychange", () => document.hidden && this.releaseAll(), opts);
  }

  disable() {
    if (!this.enabled) return;
    this.releaseAll();
    this.enabled = false;
    this.controller.abort();
    this.controller = null;
  }

  /**
   * Lift every finger and key, so the game never sees one stuck down. These
   * are not the player's doing, so they are marked as such (no activity report).
   */
  releaseAll() {
    for (const id of this.slots.values()) {
      this.emit({ type: "touch", action: "cancel", id, x: 0, y: 0 }, false);
    }
    this.slots.clear();
    for (const key of this.keys) this.emit({ type: "key", action: "up", key }, false);
    this.keys.clear();
    if (this.keyTouches) this.keyTouches.release();
  }

  /** A finger down at picture point `p` for `owner` (a pointerId, or a key's gesture). */
  press(owner, p) {
    const id = this.#freeSlot();
    if (id < 0) return false;
    this.slots.set(owner, id);
    this.emit({ type: "touch", action: "down", id, x: round5(p.x), y: round5(p.y) }, true);
    return true;
  }

  slide(owner, p) {
    const id = this.slots.get(owner);
    if (id === undefined) return; // hover, a pointer that started on a bar, a lifted key
    this.emit({ type: "touch", action: "move", id, ...this.#clamped(p) }, true);
  }

  lift(owner, p, action = "up") {
    const id = this.slots.get(owner);
    if (id === undefined) return;
    this.slots.delete(owner);
    this.emit({ type: "touch", action, id, ...this.#clamped(p) }, true);
  }

  /** Whether `owner`'s finger is still down (releaseAll lifts every one). */
  holds(owner) {
    return this.slots.has(owner);
  }

  #point(e) {
    return pictureFraction(this.video, e.clientX, e.clientY);
  }

  /** A point off the picture (a finger that slid onto a bar) sticks to its edge. */
  #clamped(p) {
    return { x: round5(clamp01(p.x)), y: round5(clamp01(p.y)) };
  }

  #freeSlot() {
    const used = new Set(this.slots.values());
    for (let id = 0; id < MAX_POINTERS; id++) if (!used.has(id)) return id;
    return -1;
  }

  #down(e) {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    e.preventDefault();
    const p = this.#point(e);
    // A touch on the letterbox bars is not on the game.
    if (!p || p.x < 0 || p.x > 1 || p.y < 0 || p.y > 1) return;
    if (!this.press(e.pointerId, p)) return;
    // Keep getting this pointer's moves and its up even if it leaves the video.
    try {
      this.video.setPointerCapture(e.pointerId);
    } catch {
      /* synthetic or already-gone pointer */
    }
  }

  #move(e) {
    if (!this.slots.has(e.pointerId)) return;
    const p = this.#point(e);
    if (p) this.slide(e.pointerId, p);
  }

  #end(e, action) {
    this.lift(e.pointerId, this.#point(e) || { x: 0, y: 0 }, action);
  }

  #key(e, action) {
    if (this.isLocalKey(e)) return;
    // Browser shortcuts (copy, reload, tab switching) stay the browser's.
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (this.keyTouches && this.keyTouches.handle(e, action, this)) return;
    const key = e.key.slice(0, MAX_KEY_LENGTH);
    if (!key) return;
    if (action === "down") {
      if (e.repeat || this.keys.has(key)) {
        e.preventDefault();
        return;
      }
      this.keys.add(key);
    } else {
      if (!this.keys.delete(key)) return;
    }
    // Space, arrows and Tab would scroll or move focus; the game gets them instead.
    if (!/^F\d+$/.test(key)) e.preventDefault();
    this.emit({ type: "key", action, key }, true);
  }
}

/**
 * Reports player activity to the server as `input` messages, at most one per
 * `intervalMs`: the server only needs to know the player is there (it resets
 * the inactivity clock), not every move. The first input after a quiet spell
 * goes out at once, so a tap on the inactivity warning lands without delay.
 */
export class ActivityReporter {
  constructor(send, intervalMs = 250) {
    this.send = send;
    this.intervalMs = intervalMs;
    this.lastSent = -Infinity;
    this.pending = null;
    this.timer = 0;
  }

  report(event) {
    const now = performance.now();
    if (now - this.lastSent >= this.intervalMs && !this.timer) {
      this.#flush(event, now);
      return;
    }
    this.pending = event; // the latest stands for all since the last report
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = 0;
        if (this.pending) this.#flush(this.pending, performance.now());
      }, Math.max(0, this.lastSent + this.intervalMs - now));
    }
  }

  #flush(event, now) {
    this.pending = null;
    this.lastSent = now;
    this.send({ type: "input", event });
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = 0;
    this.pending = null;
  }
}
