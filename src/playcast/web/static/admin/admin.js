// The operator page: the fleet, live (GET /api/admin/state every POLL_MS),
// and per worker "drain"/"undrain" and "restart" (POST, answered 202).
//
// The status token arrives once in the address (/admin?token=...): it is
// kept in this tab's sessionStorage, taken out of the address bar (and so
// out of the history and of any link copied from it), and sent as a bearer
// header, never a cookie: another site cannot make this browser act here.
//
// Rows are keyed (a worker by its id, a phone by farm and serial) and
// updated in place, so a button under the pointer stays the same element
// from one answer to the next.

const POLL_MS = 500;
const TOKEN_KEY = "playcast-admin-token";
const CONFIRM_MS = 3000; // "restart" asks for a second click within this

const $ = (selector) => document.querySelector(selector);
const body = document.body;
let token = takeToken();
let timer = 0;
let updates = 0;

function takeToken() {
  const url = new URL(window.location.href);
  const given = url.searchParams.get("token");
  if (given !== null) {
    sessionStorage.setItem(TOKEN_KEY, given);
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(path, method = "GET") {
  const response = await fetch(path, {
    method,
    cache: "no-store",
    credentials: "omit",
    headers: { Authorization: `Bearer ${token}` },
  });
  let doc = null;
  try {
    doc = await response.json();
  } catch {
    doc = { error: `HTTP ${response.status}` };
  }
  return { status: response.status, doc };
}

// --- live updates -------------------------------------------------------

async function refresh() {
  clearTimeout(timer);
  try {
    const { status, doc } = await api("/api/admin/state");
    if (status === 403) {
      deny(doc.error);
      return; // nothing changes until another token is given
    }
    if (status !== 200) throw new Error(doc.error || `HTTP ${status}`);
    body.dataset.auth = "ok";
    body.dataset.live = "yes";
    $("#denied").hidden = true;
    $("#fleet").hidden = false;
    render(doc);
    body.dataset.updates = String(++updates);
  } catch (error) {
    body.dataset.live = "no";
    $("#summary").textContent = `No answer from the server (${error.message}); trying again.`;
  }
  timer = setTimeout(refresh, POLL_MS);
}

function deny(why) {
  body.dataset.auth = "denied";
  body.dataset.live = "yes";
  $("#fleet").hidden = true;
  $("#denied").hidden = false;
  $("#denied-text").textContent = why || "The server refused the token.";
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("#token-input").value.trim();
  $("#token-input").value = "";
  sessionStorage.setItem(TOKEN_KEY, token);
  refresh();
});

// --- actions ------------------------------------------------------------

async function act(ref, action, button) {
  button.disabled = true;
  try {
    const { status, doc } = await api(
      `/api/admin/workers/${encodeURIComponent(ref)}/${action}`,
      "POST",
    );
    if (status === 403) {
      deny(doc.error);
      return;
    }
    say(status === 202 ? done(action, ref) : `${action} ${ref}: ${doc.error || status}`);
  } catch (error) {
    say(`${action} ${ref}: ${error.message}`);
  } finally {
    button.disabled = false;
  }
  refresh();
}

function done(action, ref) {
  if (action === "drain") return `${ref} drained: it leaves the pool once its session, if any, ends.`;
  if (action === "undrain") return `${ref} undrained: back in the pool.`;
  return `${ref} restarting.`;
}

function say(text) {
  $("#notice").textContent = text;
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", () => onClick(b));
  return b;
}

// Restart ends a player's session: the first click arms it, a second one
// within CONFIRM_MS restarts.
function restartButton(row) {
  return button("restart", (b) => {
    if (b.dataset.armed === "yes") {
      delete b.dataset.armed;
      b.textContent = "restart";
      act(row.dataset.workerId, "restart", b);
      return;
    }
    b.dataset.armed = "yes";
    b.textContent = "restart? click again";
    setTimeout(() => {
      delete b.dataset.armed;
      b.textContent = "restart";
    }, CONFIRM_MS);
  });
}

// --- rendering ----------------------------------------------------------

function render(doc) {
  const waiting = Object.values(doc.lines).reduce((a, b) => a + b, 0);
  $("#summary").textContent =
    `${doc.workers.length} workers, ${doc.sessions} sessions, ${doc.players} players ` +
    `(${waiting} waiting) on ${doc.nodes.length} node(s); this page asks ${doc.node}.`;
  sync($("#workers tbody"), doc.workers, (w) => w.id, buildWorker, updateWorker);
  $("#no-workers").hidden = doc.workers.length > 0;
  sync($("#phones tbody"), doc.phones, (p) => `${p.farm} ${p.serial}`, buildPhone, updatePhone);
  $("#phones-section").hidden = doc.phones.length === 0;
  const loose = doc.held.filter((h) => !h.connected);
  sync($("#held tbody"), loose, (h) => h.name, buildHeld, () => {});
  $("#held-section").hidden = loose.length === 0;
  const nodes = doc.nodes.concat(doc.unanswered_nodes.map((id) => ({ id, missing: true })));
  sync($("#nodes tbody"), nodes, (n) => n.id, cells(3), (row, n) => {
    fill(row, [n.id, n.missing ? "no answer" : n.workers, n.missing ? "" : n.clients]);
  });
  const lines = Object.entries(doc.lines).map(([game, n]) => ({ game, n }));
  sync($("#lines tbody"), lines, (l) => l.game, cells(2), (row, l) => {
    row.dataset.game = l.game;
    row.dataset.waiting = String(l.n);
    fill(row, [l.game, l.n]);
  });
  sync($("#farms tbody"), doc.farms, (f) => f.url, cells(3), updateFarm);
  $("#no-farms").hidden = doc.farms.length > 0;
}

/** Keep ``tbody``'s rows one per item, in order, each built once. */
function sync(tbody, items, key, build, update) {
  const old = new Map([...tbody.rows].map((row) => [row.dataset.key, row]));
  const rows = items.map((item) => {
    const k = String(key(item));
    let row = old.get(k);
    old.delete(k);
    if (!row) {
      row = build(item);
      row.dataset.key = k;
    }
    update(row, item);
    return row;
  });
  for (const gone of old.values()) gone.remove();
  rows.forEach((row, i) => {
    if (tbody.rows[i] !== row) tbody.insertBefore(row, tbody.rows[i] || null);
  });
}

function cells(n) {
  return () => {
    const row = document.createElement("tr");
    for (let i = 0; i < n; i++) row.insertCell();
    return row;
  };
}

/** Each cell's text (undefined: a cell kept by its own code, left alone). */
function fill(row, values) {
  values.forEach((v, i) => {
    if (v === undefined) return;
    const text = v === null ? "" : String(v);
    if (row.cells[i].textContent !== text) row.cells[i].textContent = text;
  });
}

function buildWorker(w) {
  const row = cells(8)();
  row.dataset.workerId = w.id;
  const drain = button("drain", (b) => act(row.dataset.ref, row.dataset.drainAction, b));
  drain.className = "drain";
  const restart = restartButton(row);
  restart.className = "restart";
  row.cells[7].append(drain, restart);
  return row;
}

function updateWorker(row, w) {
  const state = w.draining ? "busy · draining" : w.status;
  row.dataset.name = w.name;
  row.dataset.status = w.status;
  row.dataset.draining = String(w.draining);
  row.dataset.ref = w.name || w.id;
  row.dataset.drainAction = w.held_name ? "undrain" : "drain";
  const session = w.session_id ? `${short(w.session_id)} · ${age(w.session_age)}` : "";
  const p = w.phone;
  fill(row, [
    undefined,
    state,
    w.node,
    session,
    p ? phoneText(p) : "",
    p ? percent(p.battery_percent, p.charging) : "",
    p ? celsius(p.temperature_c) : "",
  ]);
  nameCell(row.cells[0], w.name, w.id);
  row.cells[1].className = `state ${w.draining ? "draining" : w.status}`;
  if (p) {
    row.cells[4].dataset.serial = p.serial;
    row.cells[4].dataset.phoneState = p.state;
  } else {
    delete row.cells[4].dataset.serial;
    delete row.cells[4].dataset.phoneState;
  }
  const drain = row.querySelector("button.drain");
  drain.textContent = row.dataset.drainAction;
  drain.hidden = !w.name; // an unnamed worker cannot be drained
}

function nameCell(cell, name, id) {
  const text = `${name || "(unnamed)"}\n${id}`;
  if (cell.dataset.text === text) return;
  cell.dataset.text = text;
  const strong = document.createElement("strong");
  strong.textContent = name || "(unnamed)";
  const small = document.createElement("small");
  small.textContent = id;
  cell.replaceChildren(strong, document.createElement("br"), small);
}

function buildPhone() {
  return cells(6)();
}

function updatePhone(row, p) {
  row.dataset.serial = p.serial;
  row.dataset.phoneState = p.state;
  row.dataset.stale = String(p.stale);
  fill(row, [
    p.serial,
    p.stale ? `${p.state} (farm not answering)` : p.state,
    p.adb_state,
    percent(p.battery_percent, p.charging),
    celsius(p.temperature_c),
    p.farm,
  ]);
  row.cells[1].className = `state ${p.state}`;
}

function buildHeld(h) {
  const row = cells(2)();
  row.dataset.heldName = h.name;
  row.cells[0].textContent = h.name;
  row.cells[1].append(button("undrain", (b) => act(h.name, "undrain", b)));
  return row;
}

function updateFarm(row, f) {
  row.dataset.reachable = String(f.reachable);
  const since = f.age === null ? "never answered" : `last answer ${age(f.age)} ago`;
  const state = f.reachable ? `${f.host || "?"}: answering` : `unreachable (${f.error}), ${since}`;
  const phones = f.states ? Object.values(f.states).reduce((a, b) => a + b, 0) : "";
  fill(row, [f.url, state, phones]);
}

function phoneText(p) {
  return p.stale ? `${p.serial} · ${p.state} (farm not answering)` : `${p.serial} · ${p.state}`;
}

function percent(value, charging) {
  if (value === null || value === undefined) return "";
  return `${Math.round(value)} %${charging ? " ⚡" : ""}`;
}

function celsius(value) {
  return value === null || value === undefined ? "" : `${value.toFixed(1)} °C`;
}

function short(id) {
  return id.length > 10 ? `${id.slice(0, 10)}…` : id;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor(s / 60) % 60).padStart(2, "0")} min`;
}

refresh();
