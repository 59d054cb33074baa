// Join tickets (the server's --join-secret, docs/admission.md): the site that
// sends a player here signs a ticket for one play, and the page sends it in
// `join`. It comes one of two ways:
//
// - In the page's own address, `/?ticket=JWT`. It is taken out of the address
//   bar at once (history.replaceState), so a copied link or a screenshot does
//   not carry it, and a reload does not send a spent one again.
// - From the page that embeds this one in an iframe, by postMessage. The site
//   names its own origin in the iframe's address, `/?parent_origin=https://
//   site.example`; whenever the page needs a ticket (Play, Play again) it
//   posts {type: "playcast:need_ticket"} to that origin only, and takes
//   {type: "playcast:ticket", ticket: JWT} only from its parent window, from
//   that origin. Without parent_origin no message is ever read.

/** How long Play waits for the embedding page's answer before joining without. */
export const TICKET_WAIT_MS = 5000;

export class Tickets {
  constructor(win = window) {
    this.win = win;
    this.ticket = null;
    this.waiting = [];
    const url = new URL(win.location.href);
    const given = url.searchParams.get("ticket");
    if (given !== null) {
      url.searchParams.delete("ticket");
      win.history.replaceState(win.history.state, "", url.pathname + url.search + url.hash);
      this.ticket = given || null;
    }
    const embedded = win.parent !== win;
    this.parentOrigin = embedded ? url.searchParams.get("parent_origin") : null;
    if (this.parentOrigin) win.addEventListener("message", (ev) => this.#receive(ev));
  }

  #receive(ev) {
    if (ev.source !== this.win.parent || ev.origin !== this.parentOrigin) return;
    const msg = ev.data;
    if (!msg || msg.type !== "playcast:ticket" || typeof msg.ticket !== "string") return;
    this.ticket = msg.ticket;
    const waiting = this.waiting;
    this.waiting = [];
    for (const resolve of waiting) resolve(msg.ticket);
  }

  /**
   * The ticket for the next join, or null. Embedded and without one, the page
   * asks its site and waits for the answer (TICKET_WAIT_MS at most).
   */
  next() {
    if (this.ticket || !this.parentOrigin) return Promise.resolve(this.ticket);
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      setTimeout(() => resolve(this.ticket), TICKET_WAIT_MS);
      this.win.parent.postMessage({ type: "playcast:need_ticket" }, this.parentOrigin);
    });
  }

  /** The ticket was let in (assigned or queued) or refused: it is never sent again. */
  spent() {
    this.ticket = null;
  }
}
