// Mapped keys as touches: a key the game's map names makes the same touch
// messages a finger makes (through InputCapture, sharing its ten ids), and no
// `key` message. One press is one gesture and nothing more: auto-repeat and a
// key held down add nothing, and no node plays a sequence of touches
// (automating play breaks the game's terms).
//   tap            down at the spot, up TAP_MS later
//   tap_at_pointer the same where the mouse is over the picture (nothing if it is not)
//   drag           down at the spot, moves to the pointer over duration_ms, up there

import { pictureFraction } from "./input.js";

// Long enough for a game that samples touches once a frame to see the finger.
export const TAP_MS = 50;
const STEP_MS = 16;

const lerp = (a, b, t) => ({ x: a.x + (b.x - a.x) * t, y: a.y + (b.y - a.y) * t });

export class KeyTouches {
  constructor(video) {
    this.video = video;
    this.keymap = null; // a Keymap once loaded (keymap.js)
    this.held = new Set(); // codes down now: their repeats are swallowed
    this.gestures = new Map(); // code -> {owner, timer, end}: a touch still down
    this.pointer = null; // the mouse's client position while it is over the picture
    const track = (e) => {
      if (e.pointerType === "touch") return; // a finger is its own touch
      this.pointer = e.target === video ? { x: e.clientX, y: e.clientY } : null;
    };
    window.addEventListener("pointermove", track, { passive: true });
    window.addEventListener("pointerdown", track, { passive: true });
    document.addEventListener("pointerout", (e) => {
      if (!e.relatedTarget) this.pointer = null; // left the window
    });
  }

  /** InputCapture's key hook: true when the key was the map's (no `key` message then). */
  handle(e, action, capture) {
    const node = this.keymap && this.keymap.node(e.code);
    if (!node) return false;
    if (action === "up") {
      // An up whose down went out as a `key` (before the map loaded) stays a `key`.
      if (!this.held.delete(e.code)) return false;
      e.preventDefault();
      return true;
    }
    e.preventDefault(); // Space would scroll, digits would type
    if (e.repeat || this.held.has(e.code)) return true;
    this.held.add(e.code);
    this.#play(node, capture);
    return true;
  }

  /** Everything was lifted (InputCapture.releaseAll): forget held keys and running gestures. */
  release() {
    for (const g of this.gestures.values()) clearTimeout(g.timer);
    this.gestures.clear();
    this.held.clear();
  }

  /** The picture point under the mouse, or null when the mouse is not over the picture. */
  pointerSpot() {
    if (!this.pointer) return null;
    const p = pictureFraction(this.video, this.pointer.x, this.pointer.y);
    if (!p || p.x < 0 || p.x > 1 || p.y < 0 || p.y > 1) return null;
    return p;
  }

  #play(node, capture) {
    const spot = this.keymap.spot(node);
    const end = node.type === "tap" ? spot : this.pointerSpot();
    if (!end) return; // at the pointer, and the pointer is off the picture
    this.#finish(node.key, capture); // the same key's last touch lifts first
    const owner = { key: node.key };
    const start = node.type === "drag" ? spot : end;
    if (!capture.press(owner, start)) return; // ten fingers down already
    const g = { owner, end, timer: 0 };
    this.gestures.set(node.key, g);
    if (node.type !== "drag") {
      g.timer = setTimeout(() => this.#finish(node.key, capture), TAP_MS);
      return;
    }
    const steps = Math.max(1, Math.round(node.durationMs / STEP_MS));
    let i = 0;
    const step = () => {
      if (!capture.holds(owner)) return; // cancelled (blur, end of session)
      i += 1;
      capture.slide(owner, lerp(start, end, i / steps));
      g.timer = setTimeout(() => (i < steps ? step() : this.#finish(node.key, capture)), node.durationMs / steps);
    };
    g.timer = setTimeout(step, node.durationMs / steps);
  }

  #finish(code, capture) {
    const g = this.gestures.get(code);
    if (!g) return;
    clearTimeout(g.timer);
    this.gestures.delete(code);
    capture.lift(g.owner, g.end);
  }
}
