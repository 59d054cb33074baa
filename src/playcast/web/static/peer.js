// The browser's side of the WebRTC session: the worker offers (video, the
// game's sound when it has one, and the `input` data channel), the page
// answers. Candidates trickle both ways.

import { rejectedVideo } from "./capabilities.js";

/** Server ICE servers ({urls, username, credential}) in RTCPeerConnection's shape. */
function toRtcIceServers(servers) {
  return (servers || []).map((s) => {
    const out = { urls: s.urls };
    if (s.username != null) out.username = s.username;
    if (s.credential != null) out.credential = s.credential;
    return out;
  });
}

/**
 * Ask the receiver to play frames as soon as they decode. Chrome's jitter
 * buffer otherwise holds video back to smooth out network jitter, which on a
 * game stream only adds input lag.
 */
export function preferLowDelay(receiver) {
  try {
    if ("jitterBufferTarget" in receiver) receiver.jitterBufferTarget = 0; // ms (standard)
  } catch (err) {
    console.debug("jitterBufferTarget not settable", err);
  }
  try {
    if ("playoutDelayHint" in receiver) receiver.playoutDelayHint = 0; // s (older Chrome)
  } catch (err) {
    console.debug("playoutDelayHint not settable", err);
  }
}

export class Peer {
  /**
   * @param {object[]} iceServers from `assigned`
   * @param {{
   *   onCandidate: (c: object|null) => void,
   *   onTrack: (track: MediaStreamTrack) => void,
   *   onChannel: (ch: RTCDataChannel) => void,
   *   onConnected: () => void,
   *   onFailed: (reason: string, kind: string) => void,
   * }} handlers
   */
  constructor(iceServers, handlers) {
    this.handlers = handlers;
    this.connected = false;
    this.failed = false;
    this.remoteSet = false;
    // Remote steps must apply in order (a candidate needs the offer first), but
    // the socket delivers them without waiting for the previous one to settle.
    this.queue = Promise.resolve();
    this.pc = new RTCPeerConnection({ iceServers: toRtcIceServers(iceServers), bundlePolicy: "max-bundle" });
    this.pc.addEventListener("icecandidate", (ev) => this.#localCandidate(ev.candidate));
    this.pc.addEventListener("track", (ev) => {
      preferLowDelay(ev.receiver);
      this.handlers.onTrack(ev.track);
    });
    this.pc.addEventListener("datachannel", (ev) => this.handlers.onChannel(ev.channel));
    this.pc.addEventListener("connectionstatechange", () => this.#stateChanged());
  }

  #localCandidate(c) {
    if (c === null) {
      this.handlers.onCandidate(null);
      return;
    }
    if (!c.candidate) return; // Chrome's per-transport "end" marker: the null above covers it
    this.handlers.onCandidate({ candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex });
  }

  #stateChanged() {
    const state = this.pc.connectionState;
    if (state === "connected" && !this.connected) {
      this.connected = true;
      this.handlers.onConnected();
    } else if (state === "failed") {
      this.#fail("ICE/DTLS connection failed", "ice");
    }
  }

  #fail(reason, kind) {
    if (this.failed || this.pc.signalingState === "closed") return;
    this.failed = true;
    this.handlers.onFailed(reason, kind);
  }

  /** ICE was still trying (or gave up) when the handshake ended: the network's doing. */
  iceStalled() {
    return ["checking", "failed", "disconnected"].includes(this.pc.iceConnectionState) && this.remoteSet;
  }

  /** Run `step` after the previous ones; an error in a fatal step (`fatalKind`
   * names its webrtc_failed kind) fails the session. */
  #enqueue(step, fatalKind) {
    this.queue = this.queue.then(step).catch((err) => {
      const text = String(err && err.message ? err.message : err);
      if (fatalKind) this.#fail(text, fatalKind);
      else console.warn("webrtc:", text);
    });
    return this.queue;
  }

  /** Apply the worker's offer; resolves with the answer SDP (undefined on failure). */
  acceptOffer(sdp) {
    let answer;
    return this.#enqueue(async () => {
      await this.pc.setRemoteDescription({ type: "offer", sdp });
      this.remoteSet = true;
      // Receivers exist once the offer is applied: tune them before media flows.
      for (const r of this.pc.getReceivers()) preferLowDelay(r);
      await this.pc.setLocalDescription();
      // A video line this browser rejected cannot play: say so now, send no answer.
      const rejected = rejectedVideo(this.pc.localDescription.sdp);
      if (rejected) throw new Error(rejected);
      answer = this.pc.localDescription.sdp;
    }, "negotiation").then(() => answer);
  }

  addRemoteCandidate(c) {
    return this.#enqueue(async () => {
      if (this.pc.signalingState === "closed") return;
      if (c === null || c === undefined) {
        await this.pc.addIceCandidate(); // end of candidates
        return;
      }
      await this.pc.addIceCandidate({
        candidate: c.candidate,
        sdpMid: c.sdpMid ?? null,
        sdpMLineIndex: c.sdpMLineIndex ?? null,
      });
    }, null); // one bad candidate is not fatal: others may still connect
  }

  getStats() {
    return this.pc.getStats();
  }

  close() {
    this.failed = true; // a close is not a failure to report
    this.pc.close();
  }
}
