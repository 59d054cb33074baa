// Full screen: the HUD button or the F key. The whole page goes full screen
// (not the <video>), so the controls, the key overlay and the pointer code all
// keep working: the picture is measured again on every input, so taps land
// under the pointer at any size. On phones the screen is then locked upright
// where the browser allows it (Chrome on Android, in full screen only).

export class Fullscreen {
  /** @param {HTMLButtonElement} button the HUD button (hidden where full screen cannot work) */
  constructor(button) {
    this.button = button;
    this.supported = Boolean(document.fullscreenEnabled);
    if (!this.supported) {
      button.hidden = true; // iPhone Safari: no element full screen
      return;
    }
    button.addEventListener("click", () => this.toggle());
    window.addEventListener("keydown", (e) => {
      if (!this.isKey(e)) return;
      e.preventDefault();
      if (!e.repeat) this.toggle();
    });
    document.addEventListener("fullscreenchange", () => this.#changed());
  }

  /** F (either case, no Ctrl/Alt/Meta: those are the browser's shortcuts). */
  isKey(e) {
    return this.supported && (e.key === "f" || e.key === "F") && !e.ctrlKey && !e.metaKey && !e.altKey;
  }

  toggle() {
    if (document.fullscreenElement) {
      document.exitFullscreen().catch(() => {});
      return;
    }
    document.documentElement
      .requestFullscreen({ navigationUI: "hide" })
      .then(() => this.#lockPortrait())
      .catch(() => {}); // refused (no user gesture, a policy): nothing changes
  }

  #lockPortrait() {
    const o = screen.orientation;
    if (o && typeof o.lock === "function") o.lock("portrait").catch(() => {}); // desktops: NotSupportedError
  }

  #changed() {
    const on = Boolean(document.fullscreenElement);
    this.button.setAttribute("aria-pressed", String(on));
    if (on) return;
    try {
      if (screen.orientation && typeof screen.orientation.unlock === "function") screen.orientation.unlock();
    } catch {
      /* never locked */
    }
  }
}
