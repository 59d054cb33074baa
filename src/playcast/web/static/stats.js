// The stats overlay: what getStats() says about the incoming video and sound,
// once a second while the overlay is open (polling costs nothing when it is shut),
// and what quality.js knows beside it (the sign, the worker's estimate of the
// link and its encoding, the loss, the freezes).

const POLL_MS = 1000;

/** Average time a frame (or audio sample) waited in the jitter buffer, in ms. */
function jitterBufferMs(inbound) {
  return inbound && inbound.jitterBufferEmittedCount
    ? (inbound.jitterBufferDelay / inbound.jitterBufferEmittedCount) * 1000
    : null;
}

/** One reading from an RTCStatsReport: inbound video and audio, their codecs, the ICE pair. */
export function readStats(report) {
  let video = null;
  let audio = null;
  let pairId = null;
  let nominated = null;
  const byId = new Map();
  report.forEach((s) => {
    byId.set(s.id, s);
    if (s.type === "inbound-rtp" && s.kind === "video") video = s;
    if (s.type === "inbound-rtp" && s.kind === "audio") audio = s;
    if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    // Older reports mark the pair itself instead of naming it on the transport.
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") nominated = s;
  });
  const pair = (pairId && byId.get(pairId)) || nominated;
  const codec = video && video.codecId ? byId.get(video.codecId) : null;
  const audioCodec = audio && audio.codecId ? byId.get(audio.codecId) : null;
  return {
    at: video ? video.timestamp : performance.now(),
    bytes: video ? video.bytesReceived : 0,
    framesDecoded: video ? video.framesDecoded || 0 : 0,
    fps: video && video.framesPerSecond != null ? video.framesPerSecond : null,
    width: video ? video.frameWidth : undefined,
    height: video ? video.frameHeight : undefined,
    codec: codec ? codec.mimeType.replace(/^video\//, "") : null,
    rttMs: pair && pair.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null,
    // Average time a frame waited in the jitter buffer: near 0 when low delay works.
    jitterMs: jitterBufferMs(video),
    decodeMs: video && video.framesDecoded ? (video.totalDecodeTime / video.framesDecoded) * 1000 : null,
    lost: video ? video.packetsLost || 0 : 0,
    received: video ? video.packetsReceived || 0 : 0,
    // No audio inbound: the game (or the phone, before Android 11) has no sound.
    audioCodec: audio ? (audioCodec ? audioCodec.mimeType.replace(/^audio\//, "") : "?") : null,
    audioJitterMs: jitterBufferMs(audio),
    audioLost: audio ? audio.packetsLost || 0 : null,
  };
}

function formatBitrate(bps) {
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
  return `${Math.round(bps / 1e3)} kbit/s`;
}

/** Turn two readings into the figures the overlay shows. */
export function summarize(prev, cur) {
  const dt = prev ? (cur.at - prev.at) / 1000 : 0;
  const bitrate = dt > 0 ? ((cur.bytes - prev.bytes) * 8) / dt : null;
  const fps = cur.fps ?? (dt > 0 ? (cur.framesDecoded - prev.framesDecoded) / dt : null);
  return {
    fps: fps == null ? "–" : fps.toFixed(0),
    bitrate: bitrate == null ? "–" : formatBitrate(bitrate),
    rtt: cur.rttMs == null ? "–" : `${cur.rttMs.toFixed(0)} ms`,
    resolution: cur.width ? `${cur.width}×${cur.height}` : "–",
    codec: cur.codec || "–",
    jitter: cur.jitterMs == null ? "–" : `${cur.jitterMs.toFixed(1)} ms`,
    decode: cur.decodeMs == null ? "–" : `${cur.decodeMs.toFixed(1)} ms`,
    lost: String(cur.lost),
    audioCodec: cur.audioCodec || "none",
    audioJitter: cur.audioJitterMs == null ? "–" : `${cur.audioJitterMs.toFixed(1)} ms`,
    audioLost: cur.audioLost == null ? "–" : String(cur.audioLost),
  };
}

export class StatsOverlay {
  /**
   * @param {HTMLElement} panel the overlay, with one [data-stat=NAME] per figure
   * @param {() => (RTCPeerConnection|{getStats(): Promise<RTCStatsReport>}|null)} source
   * @param {() => Object<string, string>} [extras] more figures by cell name
   */
  constructor(panel, source, extras = () => ({})) {
    this.panel = panel;
    this.source = source;
    this.extras = extras;
    this.cells = new Map([...panel.querySelectorAll("[data-stat]")].map((el) => [el.dataset.stat, el]));
    this.timer = 0;
    this.prev = null;
    this.latest = null; // last summary, for tests and the bench
  }

  get visible() {
    return !this.panel.hidden;
  }

  toggle(force) {
    const show = force ?? !this.visible;
    this.panel.hidden = !show;
    clearInterval(this.timer);
    this.timer = 0;
    this.prev = null;
    if (show) {
      this.poll();
      this.timer = setInterval(() => this.poll(), POLL_MS);
    }
    return show;
  }

  async poll() {
    const peer = this.source();
    if (!peer) return;
    let report;
    try {
      report = await peer.getStats();
    } catch {
      return; // closed between ticks
    }
    const cur = readStats(report);
    const shown = { ...summarize(this.prev, cur), ...this.extras() };
    this.prev = cur;
    this.latest = shown;
    for (const [name, text] of Object.entries(shown)) {
      const cell = this.cells.get(name);
      if (cell) cell.textContent = text;
    }
  }
}
