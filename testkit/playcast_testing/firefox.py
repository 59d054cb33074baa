"""Debian's Firefox ESR, driven over WebDriver BiDi, for the tests and benchmarks.

Why a client of our own: Firefox speaks WebDriver BiDi itself (its remote
agent, started by ``--remote-debugging-port``), so no driver binary is needed,
and geckodriver is not packaged in Debian anyway. Selenium's BiDi support
starts its sessions through WebDriver classic (geckodriver); Playwright's
Firefox is a patched build of its own that cannot be downloaded here; the
pure-BiDi Python packages are young and unproven. What the tests need is a
handful of commands (open a tab, run a script, wait for a condition, click,
screenshot), so this module speaks them directly over aiohttp's WebSocket
client: one JSON command, one JSON reply, events in between.

Each ``Firefox`` is a fresh profile in a temporary directory (its own HOME
too, which headless Firefox as root needs), with the prefs the caller gives.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

FIREFOX = (
    os.environ.get("PLAYCAST_FIREFOX") or shutil.which("firefox-esr") or "/usr/bin/firefox-esr"
)

Pref = bool | int | str
# A player's Firefox, minus what would wait for a person or reach the network:
# media plays without a click, and nothing phones home.
BASE_PREFS: dict[str, Pref] = {
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "browser.shell.checkDefaultBrowser": False,
    "app.update.disabledForTesting": True,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "browser.aboutwelcome.enabled": False,
}
# Firefox as it is when the OpenH264 plugin is off or was never downloaded
# (offline, managed or privacy-hardened installs): no H.264 in WebRTC at all.
NO_H264_PREFS: dict[str, Pref] = {
    "media.gmp-gmpopenh264.enabled": False,
    "media.webrtc.hw.h264.enabled": False,
}

_LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")


def firefox_missing() -> str | None:
    """Why the Firefox tests cannot run here, or None."""
    if not Path(FIREFOX).exists():
        return f"no firefox-esr at {FIREFOX} (apt-get install firefox-esr)"
    return None


class BidiError(RuntimeError):
    """A command Firefox answered with an error, or a script that threw."""


class BidiConnection:
    """Commands and their replies (matched by id), and events, over one socket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self._reader = asyncio.create_task(self._read(), name="bidi-reader")

    async def command(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        cid = next(self._ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[cid] = reply
        try:
            await self._ws.send_str(
                json.dumps({"id": cid, "method": method, "params": params or {}})
            )
            return await reply
        finally:
            self._pending.pop(cid, None)

    def on(self, event: str, callback: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.setdefault(event, []).append(callback)

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                if raw.type is not aiohttp.WSMsgType.TEXT:
                    continue
                msg = json.loads(raw.data)
                if msg.get("type") == "event":
                    for callback in self._listeners.get(msg["method"], []):
                        callback(msg["params"])
                    continue
                reply = self._pending.get(msg.get("id", -1))
                if reply is None or reply.done():
                    continue
                if msg.get("type") == "error":
                    reply.set_exception(BidiError(f"{msg['error']}: {msg.get('message', '')}"))
                else:
                    result: dict[str, Any] = msg.get("result", {})
                    reply.set_result(result)
        finally:
            for reply in self._pending.values():
                if not reply.done():
                    reply.set_exception(BidiError("the BiDi connection closed"))

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Tab:
    """One top-level browsing context, in a user context (profile) of its own."""

    def __init__(self, bidi: BidiConnection, context: str, user_context: str) -> None:
        self.bidi = bidi
        self.context = context
        self.user_context = user_context
        self.console: list[str] = []

    async def navigate(self, url: str) -> None:
        await self.bidi.command(
            "browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"}
        )

    async def set_viewport(self, width: int, height: int) -> None:
        await self.bidi.command(
            "browsingContext.setViewport",
            {"context": self.context, "viewport": {"width": width, "height": height}},
        )

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` (awaited if it is a promise) in the page."""
        result = await self.bidi.command(
            "script.evaluate",
            {
                "expression": f"(async () => JSON.stringify(await ({expression})))()",
                "target": {"context": self.context},
                "awaitPromise": True,
                "userActivation": True,
            },
        )
        if result.get("type") == "exception":
            details = result.get("exceptionDetails", {})
            raise BidiError(f"script threw: {details.get('text', details)}")
        value = result.get("result", {})
        if value.get("type") != "string":
            return None  # undefined
        return json.loads(value["value"])

    async def run(self, script: str) -> None:
        """Run statements (not an expression) in the page, e.g. to install helpers."""
        result = await self.bidi.command(
            "script.evaluate",
            {"expression": script, "target": {"context": self.context}, "awaitPromise": False},
        )
        if result.get("type") == "exception":
            raise BidiError(f"script threw: {result.get('exceptionDetails', {}).get('text')}")

    async def wait_for(self, expression: str, *, timeout: float = 30.0) -> Any:
        """The first truthy value of ``expression`` (awaited if a promise), checked
        in the page every 16 ms, as Playwright's wait_for_function polls."""
        poll = f"""new Promise((resolve) => {{
            const check = async () => {{
                let v;
                try {{ v = await ({expression}); }} catch (e) {{ v = undefined; }}
                if (v) resolve(v); else setTimeout(check, 16);
            }};
            check();
        }})"""
        try:
            async with asyncio.timeout(timeout):
                return await self.evaluate(poll)
        except TimeoutError:
            state = await self.evaluate("JSON.stringify(document.body.dataset)")
            raise AssertionError(f"never true: {expression!r}; body: {state}") from None

    async def click(self, x: float, y: float, *, touch: bool = False) -> None:
        """A real pointer press and release at page coordinates (mouse or finger)."""
        kind = "touch" if touch else "mouse"
        await self.bidi.command(
            "input.performActions",
            {
                "context": self.context,
                "actions": [
                    {
                        "type": "pointer",
                        "id": kind,
                        "parameters": {"pointerType": kind},
                        "actions": [
                            {"type": "pointerMove", "x": round(x), "y": round(y)},
                            {"type": "pointerDown", "button": 0},
                            {"type": "pointerUp", "button": 0},
                        ],
                    }
                ],
            },
        )

    async def click_element(self, selector: str) -> None:
        """Click the middle of the element ``selector`` names."""
        box = await self.evaluate(
            f"(r => [r.left + r.width / 2, r.top + r.height / 2])"
            f"(document.querySelector({json.dumps(selector)}).getBoundingClientRect())"
        )
        await self.click(box[0], box[1])

    async def screenshot(self) -> bytes:
        """The tab's viewport as PNG."""
        shot = await self.bidi.command(
            "browsingContext.captureScreenshot", {"context": self.context}
        )
        return base64.b64decode(shot["data"])

    async def close(self) -> None:
        with contextlib.suppress(BidiError):
            await self.bidi.command("browsingContext.close", {"context": self.context})
        with contextlib.suppress(BidiError):
            await self.bidi.command("browser.removeUserContext", {"userContext": self.user_context})


class Firefox:
    """A running Firefox and its BiDi session."""

    def __init__(
        self, bidi: BidiConnection, proc: asyncio.subprocess.Process, capabilities: dict[str, Any]
    ) -> None:
        self.bidi = bidi
        self.proc = proc
        self.version = str(capabilities.get("browserVersion", "?"))
        self._tabs: dict[str, Tab] = {}
        bidi.on("log.entryAdded", self._on_log)

    def _on_log(self, entry: dict[str, Any]) -> None:
        tab = self._tabs.get(entry.get("source", {}).get("context", ""))
        if tab is not None:
            tab.console.append(f"{entry.get('level')}: {entry.get('text')}")

    async def new_tab(self, *, preload: str | None = None) -> Tab:
        """A fresh tab in a fresh user context (own cookies and storage);
        ``preload`` runs in every document of it before the page's own scripts."""
        user = await self.bidi.command("browser.createUserContext")
        user_context = user["userContext"]
        if preload:
            await self.bidi.command(
                "script.addPreloadScript",
                {"functionDeclaration": f"() => {{ {preload} }}", "userContexts": [user_context]},
            )
        created = await self.bidi.command(
            "browsingContext.create", {"type": "tab", "userContext": user_context}
        )
        tab = Tab(self.bidi, created["context"], user_context)
        self._tabs[tab.context] = tab
        return tab


@contextlib.asynccontextmanager
async def running_firefox(prefs: dict[str, Pref] | None = None) -> AsyncIterator[Firefox]:
    """Headless Firefox ESR on a fresh profile with ``prefs``, killed on exit."""
    with tempfile.TemporaryDirectory(prefix="playcast-firefox-") as tmp:
        profile = _make_profile(Path(tmp), {**BASE_PREFS, **(prefs or {})})
        env = {**os.environ, "HOME": tmp, "MOZ_HEADLESS": "1", "MOZ_CRASHREPORTER_DISABLE": "1"}
        proc = await asyncio.create_subprocess_exec(
            FIREFOX,
            "--headless",
            "--no-remote",
            "--profile",
            str(profile),
            "--remote-debugging-port=0",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        drain: asyncio.Task[None] | None = None
        try:
            assert proc.stderr is not None
            url = await _listening_url(proc.stderr)
            drain = asyncio.create_task(_drain(proc.stderr))
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(f"{url}/session", max_msg_size=0)
                bidi = BidiConnection(ws)
                try:
                    session = await bidi.command("session.new", {"capabilities": {}})
                    await bidi.command("session.subscribe", {"events": ["log.entryAdded"]})
                    yield Firefox(bidi, proc, session.get("capabilities", {}))
                finally:
                    with contextlib.suppress(BidiError, ConnectionError):
                        async with asyncio.timeout(5):
                            await bidi.command("browser.close")
                    await bidi.close()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    async with asyncio.timeout(10):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            if drain is not None:
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain


def _make_profile(home: Path, prefs: dict[str, Pref]) -> Path:
    """A fresh profile directory whose user.js sets ``prefs``."""
    profile = home / "profile"
    profile.mkdir()
    lines = [f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items()]
    (profile / "user.js").write_text("".join(lines))
    return profile


async def _listening_url(stderr: asyncio.StreamReader, timeout: float = 60.0) -> str:
    """Read Firefox's stderr until it says where its BiDi server listens."""
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while line := await stderr.readline():
            text = line.decode(errors="replace").strip()
            seen.append(text)
            if m := _LISTENING.search(text):
                return m.group(1)
    raise RuntimeError("firefox exited before its BiDi server listened:\n" + "\n".join(seen[-20:]))


async def _drain(stderr: asyncio.StreamReader) -> None:
    """Keep reading stderr so Firefox never blocks on a full pipe."""
    while await stderr.readline():
        pass
