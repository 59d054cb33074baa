// Waiting in line (the server's --queue-limit): the place, in the status
// card's live region so a screen reader hears each change, and the time
// waited, ticking in a timer that is not announced every second.

import { queuedCard } from "./messages.js";

const TICK_MS = 1000;

/** "0:42", "12:05", "1:02:09". */
export function formatWaited(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const two = (n) => String(n).padStart(2, "0");
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h}:${two(m)}:${two(s % 60)}` : `${m}:${two(s % 60)}`;
}

export class QueueDisplay {
  /**
   * @param {{title: HTMLElement, text: HTMLElement, waited: HTMLElement}} els
   */
  constructor(els) {
    this.els = els;
    this.since = 0;
    this.position = 0;
    this.timer = 0;
  }

  /** In line at `position` (1 is next); the clock starts at the first call. */
  show(position) {
    if (!this.timer) {
      this.since = performance.now();
      this.timer = setInterval(() => this.#tick(), TICK_MS);
      this.#tick();
    }
    if (position === this.position) return;
    this.position = position;
    const card = queuedCard(position);
    this.els.title.textContent = card.title;
    this.els.text.textContent = card.text;
  }

  hide() {
    clearInterval(this.timer);
    this.timer = 0;
    this.position = 0;
  }

  #tick() {
    this.els.waited.textContent = `Waiting for ${formatWaited((performance.now() - this.since) / 1000)}`;
  }
}
