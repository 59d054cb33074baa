// The key map drawn over the picture: faint markers with key labels while `?`
// is held; with the keys button, a panel (every key, keys on/off, the overlay
// on/off, reset) and markers the player drags to move a key's spot, saved for
// next time (Keymap.moveSpot). The layer sits exactly on the picture, letterbox
// bars excluded, so a marker is where its key taps (the same geometry as
// InputCapture's pointer code).

import { pictureFraction, pictureRect } from "./input.js";

const clamp01 = (v) => Math.min(1, Math.max(0, v));

// The page's own keys, listed under the map's.
const PAGE_KEYS = [
  ["F", "Full screen"],
  ["?", "Show keys (hold)"],
  ["F2", "Stats"],
];

export class KeymapOverlay {
  /**
   * @param {HTMLVideoElement} video the picture the markers sit on
   * @param {{layer: HTMLElement, panel: HTMLElement, button: HTMLButtonElement}} ui
   *   the markers' layer, the keys panel and the HUD button that opens it
   */
  constructor(video, ui) {
    this.video = video;
    this.layer = ui.layer;
    this.panel = ui.panel;
    this.button = ui.button;
    this.keymap = null;
    this.holding = null; // the code of the held `?` key
    this.editing = false;
    this.button.hidden = true;
    this.button.addEventListener("click", () => this.setEditing(!this.editing));
    this.#control("[data-keys=done]", "click", () => this.setEditing(false));
    this.#control("[data-keys=reset]", "click", () => this.#reset());
    this.#control("[data-keys=enabled]", "change", (el) => {
      this.keymap.setEnabled(el.checked);
      this.#build();
    });
    this.#control("[data-keys=hints]", "change", (el) => this.keymap.setHints(el.checked));
    window.addEventListener("keydown", (e) => this.#key(e, true));
    window.addEventListener("keyup", (e) => this.#key(e, false));
    window.addEventListener("blur", () => this.#hold(null));
    window.addEventListener("resize", () => this.#place());
    document.addEventListener("fullscreenchange", () => this.#place());
    video.addEventListener("resize", () => this.#place()); // the stream's size changed
    // Shown only over a playing picture: follow the page's state.
    new MutationObserver(() => {
      if (!this.#playing()) this.editing = false;
      this.#render();
    }).observe(document.body, {
      attributes: true,
      attributeFilter: ["data-state", "data-video"],
    });
  }

  /** `?`: the page's key while there is a map. */
  isKey(e) {
    return e.key === "?" && this.keymap !== null;
  }

  setKeymap(keymap) {
    this.keymap = keymap;
    this.button.hidden = !keymap;
    if (keymap) this.#build();
    this.#render();
  }

  setEditing(on) {
    this.editing = Boolean(on && this.keymap);
    this.#render();
  }

  /** What shows now: `edit` (the panel is open), `hint` (`?` held) or null. */
  get mode() {
    if (!this.keymap || !this.#playing()) return null;
    if (this.editing) return "edit";
    return this.holding && this.keymap.hints ? "hint" : null;
  }

  #playing() {
    const d = document.body.dataset;
    return d.state === "connected" && d.video === "playing";
  }

  #control(selector, type, handler) {
    const el = this.panel.querySelector(selector);
    el.addEventListener(type, () => {
      if (this.keymap) handler(el);
      el.blur(); // keys go back to the game, not to this control
    });
  }

  #key(e, down) {
    if (down && this.isKey(e)) {
      e.preventDefault();
      if (!e.repeat) this.#hold(e.code);
    } else if (!down && e.code === this.holding) {
      this.#hold(null); // Shift may be up first: the key is known by its code
    }
  }

  #hold(code) {
    this.holding = code;
    this.#render();
  }

  #reset() {
    this.keymap.reset();
    this.#build();
  }

  #render() {
    const mode = this.mode;
    this.layer.hidden = !mode;
    if (mode) this.layer.dataset.mode = mode;
    else delete this.layer.dataset.mode;
    this.panel.hidden = mode !== "edit";
    this.button.setAttribute("aria-pressed", String(this.editing));
    if (mode) this.#place();
  }

  /** Lay the layer over the picture: markers are placed in its percentages. */
  #place() {
    if (this.layer.hidden) return;
    const r = pictureRect(this.video);
    if (!r) return;
    Object.assign(this.layer.style, {
      left: `${r.left}px`,
      top: `${r.top}px`,
      width: `${r.width}px`,
      height: `${r.height}px`,
    });
  }

  #build() {
    const km = this.keymap;
    this.layer.replaceChildren();
    this.layer.classList.toggle("keys-off", !km.enabled);
    const list = this.panel.querySelector("[data-keys=list]");
    list.replaceChildren();
    for (const node of km.nodes) {
      list.append(this.#row(node.label, node.name));
      const spot = km.spot(node);
      if (spot) this.layer.append(this.#marker(node, spot));
    }
    for (const [label, name] of PAGE_KEYS) list.append(this.#row(label, name));
    this.panel.querySelector("[data-keys=enabled]").checked = km.enabled;
    this.panel.querySelector("[data-keys=hints]").checked = km.hints;
  }

  #row(label, name) {
    const li = document.createElement("li");
    const kbd = document.createElement("kbd");
    kbd.textContent = label;
    li.append(kbd, ` ${name}`);
    return li;
  }

  #marker(node, spot) {
    const el = document.createElement("div");
    el.className = `keymap-marker keymap-${node.type}`;
    el.dataset.key = node.key;
    el.title = node.name;
    el.textContent = node.label;
    this.#moveMarker(el, spot);
    el.addEventListener("pointerdown", (e) => this.#dragMarker(e, el, node));
    return el;
  }

  #moveMarker(el, p) {
    el.style.left = `${p.x * 100}%`;
    el.style.top = `${p.y * 100}%`;
  }

  /** Drag a marker (edit mode only) to move its key's spot; saved when let go. */
  #dragMarker(e, el, node) {
    if (this.mode !== "edit" || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    el.setPointerCapture(e.pointerId);
    const at = (ev) => {
      const p = pictureFraction(this.video, ev.clientX, ev.clientY);
      return p && { x: clamp01(p.x), y: clamp01(p.y) };
    };
    const move = (ev) => {
      const p = at(ev);
      if (p) this.#moveMarker(el, p);
    };
    const done = (ev) => {
      el.removeEventListener("pointermove", move);
      el.removeEventListener("pointerup", done);
      el.removeEventListener("pointercancel", done);
      const p = ev.type === "pointerup" && at(ev);
      if (p) this.keymap.moveSpot(node.key, p);
      else this.#moveMarker(el, this.keymap.spot(node)); // cancelled: back where it was
    };
    el.addEventListener("pointermove", move);
    el.addEventListener("pointerup", done);
    el.addEventListener("pointercancel", done);
  }
}
