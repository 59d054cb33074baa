// "Still there?": the server's inactivity_warning as a full-screen countdown.
// Any tap or click on it tells the server the player is still here; the tap
// itself is not sent to the game, so answering cannot misplay a card.

const TICK_MS = 200;

export class InactivityWarning {
  /**
   * @param {HTMLElement} overlay the element to show
   * @param {HTMLElement} seconds where the countdown goes
   * @param {() => void} onKeep called when the player answers
   */
  constructor(overlay, seconds, onKeep) {
    this.overlay = overlay;
    this.seconds = seconds;
    this.onKeep = onKeep;
    this.deadline = 0;
    this.timer = 0;
    overlay.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      this.hide();
      this.onKeep();
    });
    // A keyboard player answers with any key.
    window.addEventListener("keydown", () => {
      if (!this.visible) return;
      this.hide();
      this.onKeep();
    });
  }

  get visible() {
    return !this.overlay.hidden;
  }

  show(secondsLeft) {
    this.deadline = performance.now() + Math.max(0, secondsLeft) * 1000;
    this.overlay.hidden = false;
    this.#tick();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.#tick(), TICK_MS);
  }

  hide() {
    if (this.overlay.hidden) return;
    this.overlay.hidden = true;
    clearInterval(this.timer);
    this.timer = 0;
  }

  #tick() {
    const left = Math.max(0, Math.ceil((this.deadline - performance.now()) / 1000));
    this.seconds.textContent = String(left);
    if (left === 0) clearInterval(this.timer); // the server ends the session now
  }
}
