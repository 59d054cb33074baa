// What the player reads when a session ends: one entry per reason the page can
// end with (the server's rejection and shutdown reasons, plus the page's own
// `server_lost` and `client_left`). Each says what happened and what to do.

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
    text: "Your connection to Playcast dropped. Check your network, then press Play again.",
  },
  heartbeat_timeout: {
    title: "Your connection is too slow",
    text: "The server stopped hearing from your browser. Check your network, then press Play again.",
  },
  handshake_failed: {
    title: "The video could not start",
    text: "Your browser could not connect to the game machine. This can happen on restricted networks (some office or school Wi-Fi). Press Play again, or try another network.",
  },
  handshake_timeout: {
    title: "The video took too long to start",
    text: "Connecting to the game machine timed out. Press Play again; if it keeps happening, try another network.",
  },
  server_shutdown: {
    title: "Playcast is restarting",
    text: "The server is being restarted for maintenance. Please try again in a minute.",
  },
  client_left: {
    title: "You left the game",
    text: "Thanks for playing! Press Play again whenever you want another round.",
  },
};

const UNKNOWN = {
  title: "The game ended",
  text: "Something went wrong on our side. Press Play again to start a new game.",
};

/** {title, text} for a reason; `serverText` covers reasons this page does not know yet. */
export function describeEnd(reason, serverText) {
  const known = REASONS[reason];
  if (known) return known;
  if (!serverText) return UNKNOWN;
  return { title: UNKNOWN.title, text: `${serverText} Press Play again to start a new game.` };
}

/** What the status card says while a session is being set up. */
export const PROGRESS = {
  waiting: { title: "Finding a game machine…", text: "This usually takes a second." },
  connecting: { title: "Connecting to the game…", text: "Setting up a direct video link." },
  starting: { title: "Starting the video…", text: "Almost there." },
};
