// What the player reads when a session ends: one entry per reason the page can
// end with (the server's rejection and shutdown reasons, plus the page's own
// `server_lost`, `client_left`, `left_line`, and `no_webrtc` / `no_video_codecs` found on
// load). Each says what happened and what to do, and only what is known: a
// network is blamed only when the failure was the network's (ICE).

import { decodableCodecs, isFirefox } from "./capabilities.js";

const REASONS = {
  no_worker_available: {
    title: "All game machines are busy",
    text: "Every game machine is in use right now. Please try again in a minute.",
  },
  inactivity_timeout: {
    title: "You were idle too long",
    text: "The game was closed because nothing was played for a while, so someone else can use the machine. Press Play again to start a new game.",
  },
  worker_failed: {
    title: "The game machine failed",
    text: "The machine running your game stopped responding. Press Play again to get a fresh one.",
  },
  server_lost: {
    title: "Connection to the server was lost",
    // The page cannot tell the player's network from a server that crashed:
    // it blames neither (issue 25).
    text: "The link between your browser and Playcast broke, on the way or at our end. Press Play again; if it keeps happening, try again in a few minutes.",
  },
  heartbeat_timeout: {
    title: "Your connection is too slow",
    text: "The server stopped hearing from your browser. Check your network, then press Play again.",
  },
  handshake_failed: {
    title: "The video could not start",
    text: "Setting up the video between your browser and the game machine failed. Press Play again to try a fresh machine.",
  },
  handshake_timeout: {
    title: "The video took too long to start",
    text: "Setting up the video with the game machine did not finish in time. Press Play again to try a fresh machine.",
  },
  server_shutdown: {
    title: "Playcast is restarting",
    text: "The server is being restarted for maintenance. Please try again in a minute.",
  },
  client_left: {
    title: "You left the game",
    text: "Thanks for playing! Press Play again whenever you want another round.",
  },
  left_line: {
    title: "You left the line",
    text: "Press Play again whenever you want to get back in line.",
  },
  queue_timeout: {
    title: "No game machine came free in time",
    text: "You waited in line a long time and every machine stayed busy. Please try again in a few minutes.",
  },
  service_unavailable: {
    title: "Playcast cannot start new games right now",
    text: "The service is having trouble on our side. Please try again in a minute.",
  },
  // The server's --join-secret: the site's ticket was missing, expired or spent.
  unauthorized: {
    title: "This link has expired",
    text: "Get a new one from the site that sent you here.",
  },
};

// handshake_failed (and handshake_timeout) by the kind of failure: the
// server's shutdown.detail, or what the page saw itself.
const FAILURES = {
  ice: {
    title: "No network path to the game machine",
    text: "Your browser could not reach the game machine directly. This happens on restricted networks (some office or school Wi-Fi, some VPNs). Press Play again, or try another network.",
  },
  negotiation: {
    title: "Your browser and the game machine could not agree on a video format",
    text: "The video this game machine sends is one your browser cannot play. Press Play again; if it keeps happening, try another browser (Chrome, Edge or Firefox).",
  },
  media: {
    title: "The game machine could not start the video",
    text: "The game on the machine failed while the video was starting. Press Play again to get a fresh one.",
  },
  unsupported: {
    title: "This browser cannot play Playcast",
    text: "Your browser does not support the direct video link (WebRTC) Playcast needs. Open this page in an up-to-date Chrome, Edge or Firefox.",
  },
};

// Before any game machine is taken: found on load, or the server's rejection.
const UNSUPPORTED = {
  no_webrtc: FAILURES.unsupported,
  no_video_codecs: {
    title: "This browser cannot play Playcast",
    text: "Your browser cannot decode any video format. Open this page in an up-to-date Chrome, Edge or Firefox.",
  },
  unsupported_browser: {
    title: "This browser cannot play the game's video",
    text: "None of the game machines sends video in a format your browser decodes. Open this page in an up-to-date Chrome, Edge or Firefox.",
  },
};

// Firefox decodes H.264 only through Cisco's OpenH264 plugin, which may be
// switched off or not downloaded yet (offline, managed or hardened installs).
const FIREFOX_NO_H264 = {
  title: "Firefox needs its H.264 plugin for this game",
  text: "The game machines send H.264 video, which Firefox plays with the OpenH264 plugin from Cisco, turned off or missing here. Turn on “OpenH264 Video Codec provided by Cisco Systems, Inc.” under Add-ons and themes → Plugins, restart Firefox, then press Play again; or use Chrome or Edge.",
};

const UNKNOWN = {
  title: "The game ended",
  text: "Something went wrong on our side. Press Play again to start a new game.",
};

/**
 * {title, text} for a reason; `detail` (a webrtc_failed kind) sharpens the
 * handshake reasons; `serverText` covers reasons this page does not know yet.
 */
export function describeEnd(reason, serverText, detail = null) {
  if ((reason === "handshake_failed" || reason === "handshake_timeout") && FAILURES[detail]) {
    return FAILURES[detail];
  }
  if (reason === "unsupported_browser" && isFirefox() && !(decodableCodecs() || []).includes("H264")) {
    return FIREFOX_NO_H264;
  }
  const known = REASONS[reason] || UNSUPPORTED[reason];
  if (known) return known;
  if (!serverText) return UNKNOWN;
  return { title: UNKNOWN.title, text: `${serverText} Press Play again to start a new game.` };
}

/** The status card while waiting in line (the server's `queued`); 1 is next. */
export function queuedCard(position) {
  return {
    title: `You are number ${position} in line`,
    text:
      position === 1
        ? "You get the next game machine that comes free. Keep this page open."
        : "Every game machine is in use. Keep this page open: your game starts as soon as one is free.",
  };
}

/** What the status card says while a session is being set up. */
export const PROGRESS = {
  waiting: { title: "Finding a game machine…", text: "This usually takes a second." },
  connecting: { title: "Connecting to the game…", text: "Setting up a direct video link." },
  starting: { title: "Starting the video…", text: "Almost there." },
};
