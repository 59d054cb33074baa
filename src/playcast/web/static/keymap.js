// Key maps: a game's keys as touches, from /static/keymaps/<game>.json
// (docs/web-client.md has the format). Parsed strictly: a map with any
// mistake is refused whole, with every mistake listed on the console, and the
// page plays on without it (keys go to the game as `key` messages, as they
// would with no map). The player's own edits (moved spots, keys off, no
// overlay on `?`) live in localStorage, one entry per game.

export const FORMAT = 1;
export const TYPES = ["tap", "tap_at_pointer", "drag"];
// The page's own keys (F2 stats, F full screen, ? the overlay), Escape (the
// browser's way out of full screen) and the modifiers a `?` is typed with.
const RESERVED = /^(F2|KeyF|Slash|Escape|(Shift|Control|Alt|Meta|OS)(Left|Right))$/;
const CODE = /^[A-Za-z0-9]{1,32}$/; // KeyboardEvent.code: Digit1, KeyE, Space, Numpad3, ArrowUp …
const MAX_NODES = 64;
const DRAG_MS = [20, 3000];
const TOP_FIELDS = ["format", "game", "name", "source", "notes", "nodes"];
const NODE_FIELDS = {
  tap: ["type", "key", "name", "label", "at"],
  tap_at_pointer: ["type", "key", "name", "label"],
  drag: ["type", "key", "name", "label", "from", "duration_ms"],
};
const STORAGE_PREFIX = "playcast.keys.";

export class KeymapError extends Error {
  constructor(problems) {
    super(problems.join("; "));
    this.name = "KeymapError";
    this.problems = problems;
  }
}

const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);
const isUnit = (v) => typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 1;
const isText = (v, max) => typeof v === "string" && v.length >= 1 && v.length <= max;

function checkPoint(v, where, problems) {
  if (!isObject(v)) {
    problems.push(`${where}: must be {"x": 0..1, "y": 0..1}`);
    return null;
  }
  const extra = Object.keys(v).filter((k) => k !== "x" && k !== "y");
  if (extra.length) problems.push(`${where}: unknown field ${extra.join(", ")}`);
  for (const axis of ["x", "y"]) {
    if (!isUnit(v[axis])) problems.push(`${where}.${axis}: must be a number from 0 to 1 (a fraction of the screen)`);
  }
  return { x: v.x, y: v.y };
}

function checkNode(raw, where, seen, problems) {
  if (!isObject(raw)) {
    problems.push(`${where}: must be an object`);
    return null;
  }
  const fields = NODE_FIELDS[raw.type];
  if (!fields) {
    problems.push(`${where}.type: must be one of ${TYPES.join(", ")} (got ${JSON.stringify(raw.type)})`);
    return null;
  }
  const extra = Object.keys(raw).filter((k) => !fields.includes(k));
  if (extra.length) problems.push(`${where}: unknown field ${extra.join(", ")} for a ${raw.type}`);
  const key = raw.key;
  if (!(typeof key === "string" && CODE.test(key))) {
    problems.push(`${where}.key: must be a KeyboardEvent.code such as "Digit1" or "KeyE" (got ${JSON.stringify(key)})`);
  } else if (RESERVED.test(key)) {
    problems.push(`${where}.key: ${key} is the page's own key`);
  } else if (seen.has(key)) {
    problems.push(`${where}.key: ${key} is mapped twice (one key, one touch)`);
  } else {
    seen.add(key);
  }
  if (raw.name !== undefined && !isText(raw.name, 64)) problems.push(`${where}.name: must be text, 1 to 64 characters`);
  if (raw.label !== undefined && !isText(raw.label, 8)) problems.push(`${where}.label: must be text, 1 to 8 characters`);
  const node = { type: raw.type, key, name: raw.name || keyLabel(key), label: raw.label || keyLabel(key) };
  if (raw.type === "tap") node.at = checkPoint(raw.at, `${where}.at`, problems);
  if (raw.type === "drag") {
    node.from = checkPoint(raw.from, `${where}.from`, problems);
    const ms = raw.duration_ms;
    if (!(Number.isInteger(ms) && ms >= DRAG_MS[0] && ms <= DRAG_MS[1])) {
      problems.push(`${where}.duration_ms: must be a whole number of milliseconds from ${DRAG_MS[0]} to ${DRAG_MS[1]}`);
    }
    node.durationMs = ms;
  }
  return node;
}

/**
 * A key map document, checked: `{game, name, nodes}` with every node's
 * `type`, `key`, `name`, `label` and its spot (`at`, or `from` and
 * `durationMs`). Throws KeymapError listing every problem found.
 */
export function parseKeymap(doc, game = null) {
  const problems = [];
  if (!isObject(doc)) throw new KeymapError(["the map must be a JSON object"]);
  const extra = Object.keys(doc).filter((k) => !TOP_FIELDS.includes(k));
  if (extra.length) problems.push(`unknown field ${extra.join(", ")}`);
  if (doc.format !== FORMAT) problems.push(`format: must be ${FORMAT} (got ${JSON.stringify(doc.format)})`);
  if (doc.game !== undefined && game !== null && doc.game !== game) {
    problems.push(`game: the map is for ${JSON.stringify(doc.game)}, not ${JSON.stringify(game)}`);
  }
  for (const field of ["name", "source", "notes"]) {
    if (doc[field] !== undefined && typeof doc[field] !== "string") problems.push(`${field}: must be text`);
  }
  const nodes = [];
  if (!Array.isArray(doc.nodes) || doc.nodes.length === 0) {
    problems.push("nodes: must be a list of at least one node");
  } else if (doc.nodes.length > MAX_NODES) {
    problems.push(`nodes: at most ${MAX_NODES}`);
  } else {
    const seen = new Set();
    doc.nodes.forEach((raw, i) => {
      const node = checkNode(raw, `nodes[${i}]`, seen, problems);
      if (node) nodes.push(node);
    });
  }
  if (problems.length) throw new KeymapError(problems);
  return { game: doc.game || game, name: doc.name || doc.game || game, nodes };
}

/** What a key is called on a keycap: Digit2 → 2, KeyE → E, Numpad3 → Num3. */
export function keyLabel(code) {
  if (typeof code !== "string") return "?";
  const m = /^(Digit|Key)(.)$/.exec(code);
  if (m) return m[2];
  const arrows = { ArrowUp: "↑", ArrowDown: "↓", ArrowLeft: "←", ArrowRight: "→" };
  if (arrows[code]) return arrows[code];
  return code.replace(/^Numpad/, "Num");
}

// --- the player's own edits ------------------------------------------------------

function readPrefs(storage, name) {
  try {
    const raw = storage && storage.getItem(name);
    const prefs = raw ? JSON.parse(raw) : {};
    return isObject(prefs) ? prefs : {};
  } catch (err) {
    console.warn(`keymap: ignoring the saved key edits (${err.message})`);
    return {}; // blocked storage or a damaged entry: the map as shipped
  }
}

/** A parsed map plus what this player changed about it. */
export class Keymap {
  constructor(spec, storage = null) {
    this.spec = spec;
    this.storage = storage;
    this.storageName = STORAGE_PREFIX + spec.game;
    this.byKey = new Map(spec.nodes.map((n) => [n.key, n]));
    const prefs = readPrefs(storage, this.storageName);
    this.enabled = prefs.off !== true;
    this.hints = prefs.hints !== false;
    this.spots = new Map();
    for (const [key, p] of Object.entries(isObject(prefs.spots) ? prefs.spots : {})) {
      if (this.byKey.has(key) && isObject(p) && isUnit(p.x) && isUnit(p.y)) this.spots.set(key, { x: p.x, y: p.y });
    }
  }

  get nodes() {
    return this.spec.nodes;
  }

  /** The node a key plays, while the map is on. */
  node(code) {
    return this.enabled ? this.byKey.get(code) : undefined;
  }

  /** Where a node touches first (`at` or `from`, as the player moved it), or null (at the pointer). */
  spot(node) {
    const own = this.spots.get(node.key);
    if (own) return own;
    return node.at || node.from || null;
  }

  moveSpot(code, p) {
    if (!this.byKey.has(code)) return;
    this.spots.set(code, { x: p.x, y: p.y });
    this.#save();
  }

  setEnabled(on) {
    this.enabled = on;
    this.#save();
  }

  setHints(on) {
    this.hints = on;
    this.#save();
  }

  /** Back to the map as shipped: spots, on/off and the overlay setting. */
  reset() {
    this.spots.clear();
    this.enabled = true;
    this.hints = true;
    try {
      if (this.storage) this.storage.removeItem(this.storageName);
    } catch {
      /* nothing was stored */
    }
  }

  #save() {
    const prefs = { spots: Object.fromEntries(this.spots) };
    if (!this.enabled) prefs.off = true;
    if (!this.hints) prefs.hints = false;
    try {
      if (this.storage) this.storage.setItem(this.storageName, JSON.stringify(prefs));
    } catch {
      /* not remembered, still applied */
    }
  }
}

function pageStorage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage blocked: edits last as long as the page
  }
}

/**
 * The map for `game`: `{keymap, status}`, status `ready`, `none` (the server
 * has no map for this game) or `bad` (unreadable or invalid: said on the
 * console). Never throws: without a map the page plays as it always did.
 */
export async function loadKeymap(game, storage = pageStorage()) {
  if (!/^[\w.-]{1,100}$/.test(game)) return { keymap: null, status: "none" };
  const url = `/static/keymaps/${game}.json`;
  try {
    const res = await fetch(url);
    if (res.status === 404) {
      console.info(`keymap: no key map for ${game}; keys go to the game as they are`);
      return { keymap: null, status: "none" };
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const doc = await res.json();
    return { keymap: new Keymap(parseKeymap(doc, game), storage), status: "ready" };
  } catch (err) {
    const problems = err instanceof KeymapError ? err.problems : [err.message];
    console.error(
      `keymap: ${url} was not loaded, keys go to the game as they are:\n` + problems.map((p) => `  - ${p}`).join("\n"),
    );
    return { keymap: null, status: "bad" };
  }
}
