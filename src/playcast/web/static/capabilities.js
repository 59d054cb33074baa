// What this browser can play, checked once on load, before Play does anything.
//
// Without RTCPeerConnection (WebKitGTK builds without WebRTC, WebRTC turned off
// by policy) nothing can be played: the page says so and never opens a socket,
// so no game machine is taken. Otherwise the video codecs the browser decodes
// go in `join`, and the server pairs it only with a machine that sends one of
// them (or answers `unsupported_browser`).

// RTCRtpCodec mimeTypes that are not pictures: retransmission and redundancy.
const NOT_VIDEO = new Set(["RTX", "RED", "ULPFEC", "FLEXFEC-03"]);

/** True in Firefox (whose H.264 comes from a plugin that may be missing). */
export function isFirefox(nav = navigator) {
  return /\bFirefox\//.test(nav.userAgent);
}

/**
 * The video codecs the browser decodes, by WebRTC name ("H264", "VP8", ...),
 * in its own order; null when it cannot tell (then the server assumes H.264).
 */
export function decodableCodecs(win = window) {
  const receiver = win.RTCRtpReceiver;
  if (!receiver || typeof receiver.getCapabilities !== "function") return null;
  let caps;
  try {
    caps = receiver.getCapabilities("video");
  } catch {
    return null;
  }
  if (!caps || !Array.isArray(caps.codecs)) return null;
  const names = [];
  for (const c of caps.codecs) {
    const name = String(c.mimeType || "").replace(/^video\//i, "").toUpperCase();
    if (name && !NOT_VIDEO.has(name) && !names.includes(name)) names.push(name);
  }
  return names.slice(0, 16); // the protocol's limit; browsers list far fewer
}

/**
 * {ok: true, codecs} when this browser can try to play; else {ok: false,
 * problem}, where problem is an end reason describeEnd() knows.
 */
export function checkBrowser(win = window) {
  if (typeof win.RTCPeerConnection !== "function") return { ok: false, problem: "no_webrtc" };
  const codecs = decodableCodecs(win);
  if (codecs !== null && codecs.length === 0) return { ok: false, problem: "no_video_codecs" };
  return { ok: true, codecs };
}

/**
 * Why this page's own answer cannot carry the video, or null: a browser that
 * decodes none of the offered codecs rejects the video line (m=video 0).
 */
export function rejectedVideo(answerSdp) {
  const video = /^m=video (\d+) /m.exec(answerSdp || "");
  if (!video) return "the answer has no video line";
  if (video[1] === "0") return "this browser cannot decode the video codec the game machine offered (m=video 0)";
  return null;
}

/** The `webrtc_failed` kind for an exception thrown while setting up the peer. */
export function failureKind(err) {
  if (err instanceof ReferenceError || (err && err.name === "NotSupportedError")) return "unsupported";
  return "internal";
}
