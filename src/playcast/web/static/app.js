// The player's page: one play session at a time, from the Play button to the
// end card. The page's state lives on <body data-state="idle|waiting|queued|
// connecting|connected|ended"> (and data-reason once ended), so the CSS, the
// tests and a curious player all read the same thing. While the signaling
// socket is down and being resumed, body[data-reconnecting="true"] joins it.

import { checkBrowser, failureKind } from "./capabilities.js";
import { Fullscreen } from "./fullscreen.js";
import { InputCapture, ActivityReporter } from "./input.js";
import { loadKeymap } from "./keymap.js";
import { KeymapOverlay } from "./keymap-overlay.js";
import { KeyTouches } from "./keytouch.js";
import { describeEnd, PROGRESS } from "./messages.js";
import { Peer } from "./peer.js";
import { ConnectionQuality } from "./quality.js";
import { QueueDisplay } from "./queue.js";
import { ATTEMPT_TIMEOUT_MS, Outbox, retryDelayMs } from "./resume.js";
import { Signaling, clientSocketUrl, DEFAULT_GAME } from "./signaling.js";
import { Sound } from "./sound.js";
import { StatsOverlay } from "./stats.js";
import { Tickets } from "./tickets.js";
import { InactivityWarning } from "./warning.js";

const STATS_KEY = "F2";
const GAME_NAMES = { "com.supercell.clashroyale": "Clash Royale" };

const $ = (selector) => document.querySelector(selector);
const ui = {
  body: document.body,
  video: $("#stream"),
  play: $("#play"),
  again: $("#again"),
  leave: $("#leave"),
  leaveLine: $("#leave-line"),
  reconnecting: $("#reconnecting-text"),
  statsButton: $("#stats-button"),
  fullscreenButton: $("#fullscreen-button"),
  statusTitle: $("#status-title"),
  statusText: $("#status-text"),
  gameName: $("#game-name"),
};

const params = new URLSearchParams(window.location.search);
const game = params.get("game") || DEFAULT_GAME;
// Checked once, on load: a browser that cannot play is told so before Play.
const support = checkBrowser();
// Read (and taken out of the address bar) at once, before anything else.
const tickets = new Tickets();

/**
 * Show `state` (and `reason` once ended, or unsupported) on <body> and in the
 * status card; `detail` is the kind of a handshake failure, when known.
 */
function setState(state, reason = null, serverText = "", detail = null) {
  ui.body.dataset.state = state;
  if (reason) ui.body.dataset.reason = reason;
  else delete ui.body.dataset.reason;
  if (detail) ui.body.dataset.detail = detail;
  else delete ui.body.dataset.detail;
  const ending = state === "ended" || state === "unsupported";
  const card = ending ? describeEnd(reason, serverText, detail) : PROGRESS[state];
  if (card) {
    ui.statusTitle.textContent = card.title;
    ui.statusText.textContent = card.text;
  }
  if (state !== "queued") queue.hide();
  if (state === "ended") ui.again.focus({ preventScroll: true });
}

/** The "Reconnecting…" sign; its text is set when shown, so it is announced. */
function setReconnecting(on) {
  if (on) ui.body.dataset.reconnecting = "true";
  else delete ui.body.dataset.reconnecting;
  ui.reconnecting.textContent = on ? "Reconnecting…" : "";
}

function setVideo(playing) {
  ui.body.dataset.video = playing ? "playing" : "none";
  // Until the first frame, the card says the video is on its way.
  if (!playing && ui.body.dataset.state === "connected") {
    ui.statusTitle.textContent = PROGRESS.starting.title;
    ui.statusText.textContent = PROGRESS.starting.text;
  }
}

const isStatsKey = (e) => e.key === STATS_KEY;
const fullscreen = new Fullscreen(ui.fullscreenButton);
const keyTouches = new KeyTouches(ui.video);
const keysOverlay = new KeymapOverlay(ui.video, {
  layer: $("#keymap"),
  panel: $("#keys-panel"),
  button: $("#keys-button"),
});
// The page's own keys never reach the game.
const isPageKey = (e) => isStatsKey(e) || fullscreen.isKey(e) || keysOverlay.isKey(e);
let current = null; // the PlaySession in progress, if any

const sound = new Sound(ui.video, $("#mute-button"));
const currentPeer = () => (current && current.peer ? current.peer : null);
const quality = new ConnectionQuality(
  { body: ui.body, video: ui.video, sign: $("#quality"), notice: $("#stalled") },
  currentPeer,
);
const stats = new StatsOverlay($("#stats"), currentPeer, () => quality.summary());
const queue = new QueueDisplay({ title: ui.statusTitle, text: ui.statusText, waited: $("#queue-waited") });
const warning = new InactivityWarning($("#warning"), $("#warning-seconds"), () => current && current.keepAlive());

/**
 * One attempt at playing: a socket, then a peer connection, until it ends.
 * With a resume token (the server's --resume-grace) a socket that drops
 * mid-session is replaced by a new one that resumes the session; the peer
 * connection, and so the game, never notices.
 */
class PlaySession {
  constructor() {
    this.ended = false;
    this.peer = null;
    this.channel = null;
    this.sessionId = null;
    this.wakeLock = null;
    this.token = null; // resume_token: from assigned, replaced by each resumed
    this.graceMs = 0;
    this.resuming = null; // while the socket is down: {deadline, attempt, timer, old, leave}
    this.outbox = new Outbox();
    // Picture and sound in one stream, whatever streams the worker's tracks
    // are announced in (they are not synchronized: each plays at once).
    this.media = new MediaStream();
    this.reporter = new ActivityReporter((msg) => this.#send(msg));
    const emit = (event, byPlayer) => this.#input(event, byPlayer);
    this.input = new InputCapture(ui.video, emit, isPageKey, keyTouches);
    this.#join();
  }

  #join() {
    setState("waiting");
    const join = support.codecs ? { type: "join", game, codecs: support.codecs } : { type: "join", game };
    this.sig = this.#open(tickets.next().then((ticket) => (ticket ? { ...join, ticket } : join)));
  }

  /**
   * A signaling socket whose first message is `hello` (or what it resolves
   * to). Only the current one (this.sig) is listened to: a socket replaced
   * by a resume is ignored.
   */
  #open(hello) {
    const sig = new Signaling(clientSocketUrl(), {
      onOpen: async () => sig.send(await hello),
      onMessage: (msg) => sig === this.sig && this.#message(msg),
      onError: (msg) => sig === this.sig && this.#error(msg),
      onClose: () => sig === this.sig && this.#socketClosed(),
    });
    return sig;
  }

  /** Send now, or, while the socket is being resumed, once it is back. */
  #send(msg) {
    if (this.resuming) this.outbox.push(msg);
    else if (this.sig) this.sig.send(msg);
  }

  #message(msg) {
    if (msg.type === "shutdown") {
      // A timeout while ICE was still checking is the network's doing too.
      const stalled = msg.reason === "handshake_timeout" && this.peer && this.peer.iceStalled();
      this.#end(msg.reason, msg.message, msg.detail || (stalled ? "ice" : null));
      // Acknowledge only after the teardown above, as the protocol asks.
      this.sig.send({ type: "shutdown_ack", ok: true, detail: "player page closed its session" });
      this.sig.close();
      return;
    }
    if (msg.type === "resumed") {
      this.#resumed(msg);
      return;
    }
    if (this.ended) return;
    switch (msg.type) {
      case "queued":
        tickets.spent();
        setState("queued");
        queue.show(msg.position);
        break;
      case "assigned":
        tickets.spent();
        this.sessionId = msg.session_id;
        this.token = msg.resume_token || null;
        this.graceMs = (msg.resume_grace || 0) * 1000;
        ui.body.dataset.worker = msg.worker_id;
        setState("connecting");
        this.#createPeer(msg.ice_servers);
        break;
      case "rejected":
        if (msg.reason === "unauthorized") {
          console.warn("signaling: ticket refused:", msg.detail);
          tickets.spent();
        }
        this.#end(msg.reason, msg.message);
        this.sig.close();
        break;
      case "reconnect":
        // This server is draining: go elsewhere now, before it closes us.
        this.#reconnect();
        break;
      case "offer":
        this.#answer(msg.sdp);
        break;
      case "ice_candidate":
        if (this.peer) this.peer.addRemoteCandidate(msg.candidate);
        break;
      case "inactivity_warning":
        warning.show(msg.seconds_left);
        break;
      default:
        console.debug("signaling: ignored", msg.type);
    }
  }

  #createPeer(iceServers) {
    const sid = () => this.sessionId;
    try {
      this.#newPeer(iceServers, sid);
    } catch (err) {
      // Reported at once: the server ends the session (handshake_failed)
      // instead of holding the machine until the handshake times out.
      console.error("webrtc:", err);
      const reason = `the page could not create its peer connection: ${err && err.message ? err.message : err}`;
      this.#send({ type: "webrtc_failed", session_id: sid(), reason, kind: failureKind(err) });
    }
  }

  #newPeer(iceServers, sid) {
    this.peer = new Peer(iceServers, {
      onCandidate: (candidate) => this.#send({ type: "ice_candidate", session_id: sid(), candidate }),
      onTrack: (track) => this.#addTrack(track),
      onChannel: (channel) => {
        if (channel.label !== "input") return;
        this.channel = channel;
        quality.attach(channel);
      },
      onConnected: () => {
        this.#send({ type: "webrtc_connected", session_id: sid() });
        if (this.ended) return;
        setState("connected");
        setVideo(ui.body.dataset.video === "playing");
        this.input.enable();
        quality.start(this.channel);
        this.#keepScreenOn();
      },
      // The server answers with a shutdown (handshake_failed or worker_failed).
      onFailed: (reason, kind) => this.#send({ type: "webrtc_failed", session_id: sid(), reason, kind }),
    });
  }

  async #answer(sdp) {
    if (!this.peer) return;
    const answer = await this.peer.acceptOffer(sdp);
    if (answer && !this.ended) this.#send({ type: "answer", session_id: this.sessionId, sdp: answer });
  }

  #addTrack(track) {
    if (this.ended) return;
    this.media.addTrack(track);
    const video = ui.video;
    if (video.srcObject !== this.media) video.srcObject = this.media;
    sound.setHasAudio(this.media.getAudioTracks().length > 0);
    sound.play();
    if (track.kind !== "video") return;
    const firstFrame = () => {
      if (!this.ended) setVideo(true);
    };
    if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(firstFrame);
    else video.addEventListener("playing", firstFrame, { once: true });
  }

  #input(event, byPlayer) {
    const ch = this.channel;
    if (ch && ch.readyState === "open") ch.send(JSON.stringify(event));
    if (!byPlayer) return; // a release on blur is not the player being there
    this.reporter.report(event);
    warning.hide();
  }

  /** The player answered the inactivity warning. */
  keepAlive() {
    if (!this.ended) this.reporter.report({ type: "keepalive" });
  }

  async #keepScreenOn() {
    try {
      if ("wakeLock" in navigator) this.wakeLock = await navigator.wakeLock.request("screen");
    } catch {
      /* not allowed (hidden tab, no user gesture): the screen may dim, nothing worse */
    }
  }

  /** The player pressed Leave (in game or in line), or is closing the tab. */
  leave() {
    if (this.ended) return;
    const reason = ui.body.dataset.state === "queued" ? "left_line" : "client_left";
    if (this.resuming) {
      // The game ends for the player now; the resume goes on quietly only to
      // say `leave`, so the machine is freed now rather than after the grace.
      this.resuming.leave = true;
      this.#end(reason);
      return;
    }
    this.sig.send({ type: "leave" });
    this.#end(reason);
    this.sig.close();
  }

  // --- the socket dropped: resume (or end) ------------------------------------

  #socketClosed() {
    if (this.resuming) {
      this.#retry(); // that attempt failed
      return;
    }
    if (this.ended) return;
    if (this.#canResume()) this.#startResume(null);
    else this.#end("server_lost");
  }

  #canResume() {
    const state = ui.body.dataset.state;
    return Boolean(this.token && this.graceMs > 0 && (state === "connecting" || state === "connected"));
  }

  /** The server said `reconnect` (a node draining): resume at once, elsewhere. */
  #reconnect() {
    if (this.resuming) return;
    if (this.#canResume()) {
      this.#startResume(this.sig);
      return;
    }
    // Not in a session yet (waiting or in line): join again on a new socket.
    // The place in line stays with the node that let us go. In a session
    // without a token, the coming close ends it (server_lost), as always.
    const state = ui.body.dataset.state;
    if (state !== "waiting" && state !== "queued") return;
    const old = this.sig;
    this.#join();
    old.close();
  }

  /** `old`: the socket still open (a draining node's), closed once resumed. */
  #startResume(old) {
    this.resuming = { deadline: performance.now() + this.graceMs, attempt: 0, timer: 0, old, leave: false };
    setReconnecting(true);
    this.#attempt();
  }

  #attempt() {
    const r = this.resuming;
    const left = r.deadline - performance.now();
    if (left <= 0) {
      this.#resumeFailed("the resume grace ran out");
      return;
    }
    const sig = this.#open({ type: "resume", session_id: this.sessionId, token: this.token });
    this.sig = sig;
    // A socket that neither opens nor is answered (a dead link) is given up.
    r.timer = setTimeout(() => {
      if (this.sig !== sig || this.resuming !== r) return;
      this.sig = null;
      sig.close();
      this.#retry();
    }, Math.min(ATTEMPT_TIMEOUT_MS, left));
  }

  #retry() {
    const r = this.resuming;
    clearTimeout(r.timer);
    const left = r.deadline - performance.now();
    if (left <= 0) {
      this.#resumeFailed("the resume grace ran out");
      return;
    }
    r.timer = setTimeout(() => this.#attempt(), Math.min(retryDelayMs(++r.attempt), left));
  }

  #resumed(msg) {
    const r = this.resuming;
    if (!r || msg.session_id !== this.sessionId) return;
    clearTimeout(r.timer);
    this.resuming = null;
    this.token = msg.resume_token;
    if (r.old) r.old.close();
    if (!this.ended) setReconnecting(false);
    if (r.leave) {
      this.sig.send({ type: "leave" });
      this.sig.close();
      return;
    }
    this.outbox.flush((m) => this.sig.send(m));
  }

  #error(msg) {
    if (msg.code === "resume_failed" && this.resuming) this.#resumeFailed(msg.message);
  }

  #resumeFailed(why) {
    const r = this.resuming;
    console.warn("signaling: resume failed:", why);
    clearTimeout(r.timer);
    this.resuming = null;
    const sig = this.sig;
    this.sig = null;
    if (sig) sig.close();
    if (r.old) r.old.close();
    this.#end("server_lost");
  }

  #end(reason, serverText = "", detail = null) {
    if (this.ended) return;
    this.ended = true;
    setReconnecting(false); // a quiet resume to say `leave` shows nothing
    this.input.disable();
    this.reporter.stop();
    quality.stop();
    if (this.peer) this.peer.close();
    if (this.wakeLock) this.wakeLock.release().catch(() => {});
    warning.hide();
    showStats(false);
    ui.video.srcObject = null;
    sound.setHasAudio(false);
    setVideo(false);
    setState("ended", reason, serverText, detail);
  }
}

function start() {
  if (!support.ok || (current && !current.ended)) return;
  sound.unlock(); // in the click itself: the gesture that lets the page make sound
  current = new PlaySession();
  window.playcast.session = current;
}

function showStats(show) {
  const shown = stats.toggle(show);
  ui.statsButton.setAttribute("aria-pressed", String(shown));
}

ui.gameName.textContent = GAME_NAMES[game] || game;
ui.play.addEventListener("click", start);
ui.again.addEventListener("click", start);
ui.leave.addEventListener("click", () => current && current.leave());
ui.leaveLine.addEventListener("click", () => current && current.leave());
ui.statsButton.addEventListener("click", () => showStats());
window.addEventListener("keydown", (e) => {
  if (isStatsKey(e) && !e.repeat) {
    e.preventDefault();
    showStats();
  }
});
// Closing the tab frees the game machine now rather than at the heartbeat timeout.
window.addEventListener("pagehide", () => current && current.leave());

// For tests, benchmarks and the console: read-only handles on the live objects.
window.playcast = { session: null, stats, sound, quality, start, keymap: null, tickets };

// <body data-keymap="ready|none|bad">: whether this game's keys are mapped.
loadKeymap(game).then(({ keymap, status }) => {
  keyTouches.keymap = keymap;
  keysOverlay.setKeymap(keymap);
  window.playcast.keymap = keymap;
  ui.body.dataset.keymap = status;
});

if (!support.ok) setState("unsupported", support.problem);
else if (params.get("autoplay") === "1") start();
