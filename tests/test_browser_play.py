"""Playing in headless Chromium against a real server and a real synthetic worker.

What the player sees is read back from the decoded video through a canvas:
every touch-down makes the synthetic game draw a pure white disc at the touch
point, a colour the scene itself never uses.
"""

from __future__ import annotations

import itertools

import pytest
from browser_support import (
    DESKTOP,
    PHONE,
    RECORDER_JS,
    WAIT_MS,
    Players,
    available,
    is_white,
    picture_to_page,
    play,
    sent_on_channel,
    sent_on_socket,
    system,
    wait_white,
)

from playcast.backends.audio import CLICK_THRESHOLD
from playcast.inputs import Key, Touch, decode_input

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

STATES_JS = """
window.__states = [];
new MutationObserver(() => {
  const s = document.body.dataset.state;
  if (window.__states[window.__states.length - 1] !== s) window.__states.push(s);
}).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-state'] });
"""


async def test_full_play_desktop_click_draws_disc_where_clicked(players: Players) -> None:
    async with system(players, workers=1) as (server, _):
        page = await players.open(server.url, viewport=DESKTOP, init_script=STATES_JS)
        assert await page.is_visible("#play")
        await play(page)
        assert await page.evaluate("window.__states") == ["waiting", "connecting", "connected"]
        size = await page.evaluate(
            "(v => [v.videoWidth, v.videoHeight])(document.querySelector('#stream'))"
        )
        assert size == [720, 1280]
        # Low-delay receive: the jitter buffer target was set to 0, for the
        # picture and for the sound.
        targets = await page.evaluate(
            "window.playcast.session.peer.pc.getReceivers()"
            ".map(r => [r.track.kind, r.jitterBufferTarget])"
        )
        assert sorted(targets) == [["audio", 0], ["video", 0]]

        # The desktop viewport letterboxes the portrait picture: the click must
        # land in picture coordinates, bars excluded.
        x, y = 0.25, 0.7
        assert not await is_white(page, x, y)
        await page.mouse.click(*await picture_to_page(page, x, y))
        await wait_white(page, [(x, y)])
        assert not await is_white(page, 0.75, 0.3), "a disc away from the click"


async def test_phone_touch_and_multitouch_draw_discs(players: Players) -> None:
    async with system(players, workers=1) as (server, _):
        page = await players.open(server.url, viewport=PHONE, touch=True, init_script=RECORDER_JS)
        await play(page)
        # Portrait picture on a taller phone: full width, bars above and below.
        box = await page.evaluate(
            "(r => [r.width, r.height])(document.querySelector('#stream').getBoundingClientRect())"
        )
        assert box == [PHONE["width"], PHONE["height"]]

        x, y = 0.6, 0.35
        await page.touchscreen.tap(*await picture_to_page(page, x, y))
        await wait_white(page, [(x, y)])

        # Two fingers down at once: two discs in the same frame.
        a, b = (0.2, 0.8), (0.8, 0.55)
        points = [await picture_to_page(page, *a), await picture_to_page(page, *b)]
        cdp = await page.context.new_cdp_session(page)
        touch_points = [{"x": px, "y": py, "id": i} for i, (px, py) in enumerate(points)]
        await cdp.send(
            "Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": touch_points}
        )
        await wait_white(page, [a, b])
        await cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        await page.wait_for_function(
            "window.__sent.channel.filter(m => m.data.includes('\"up\"')).length >= 3",
            timeout=WAIT_MS,
        )
        downs = [e for e in map(decode_input, await sent_on_channel(page)) if e.action == "down"]
        assert isinstance(downs[-1], Touch) and isinstance(downs[-2], Touch)
        assert {downs[-1].id, downs[-2].id} == {0, 1}, "two fingers, two ids"


async def test_losing_focus_lifts_fingers_and_keys_without_counting_as_activity(
    players: Players,
) -> None:
    async with system(players, workers=1) as (server, _):
        page = await players.open(server.url, viewport=DESKTOP, init_script=RECORDER_JS)
        await play(page)
        await page.mouse.move(*await picture_to_page(page, 0.5, 0.5))
        await page.mouse.down()
        await page.keyboard.down("b")
        # Both were reported; wait until no report is pending either.
        idle = "(r => r.timer === 0 && r.pending === null)(window.playcast.session.reporter)"
        await page.wait_for_function(
            f"window.__sent.channel.length >= 2 && {idle}", timeout=WAIT_MS
        )
        reports = len([m for m in await sent_on_socket(page) if m["type"] == "input"])
        await page.evaluate("window.dispatchEvent(new Event('blur'))")

        released = [decode_input(m) for m in (await sent_on_channel(page))[2:]]
        assert released == [
            Touch(action="cancel", id=0, x=0.0, y=0.0),
            Key(action="up", key="b"),
        ]
        # Not the player's doing: nothing reported, nothing scheduled to be.
        assert await page.evaluate(idle)
        assert len([m for m in await sent_on_socket(page) if m["type"] == "input"]) == reports


async def test_inputs_on_the_data_channel_are_what_the_worker_decodes(players: Players) -> None:
    async with system(players, workers=1) as (server, _):
        page = await players.open(server.url, viewport=DESKTOP, init_script=RECORDER_JS)
        await play(page)

        # A click on the letterbox bar is not on the game: nothing is sent.
        await page.mouse.click(20, DESKTOP["height"] / 2)
        # A drag inside the picture: down, moves, up, all in picture coordinates.
        sx, sy = await picture_to_page(page, 0.5, 0.5)
        ex, ey = await picture_to_page(page, 0.9, 0.1)
        await page.mouse.move(sx, sy)
        await page.mouse.down()
        await page.mouse.move(ex, ey, steps=20)
        await page.mouse.up()
        await page.keyboard.press("a")
        # The last report to the server is the last input (the key's up).
        await page.wait_for_function(
            """() => { const r = window.__sent.socket.map(m => JSON.parse(m.data))
                .filter(m => m.type === 'input');
                return r.length && r[r.length - 1].event.type === 'key'
                    && r[r.length - 1].event.action === 'up'; }""",
            timeout=WAIT_MS,
        )

        events = [decode_input(m) for m in await sent_on_channel(page)]
        touches = [e for e in events if isinstance(e, Touch)]
        keys = [e for e in events if isinstance(e, Key)]
        assert touches[0].action == "down"
        assert touches[-1].action == "up"
        assert {t.action for t in touches[1:-1]} == {"move"}
        assert len(touches) >= 3
        assert {t.id for t in touches} == {0}
        first, last = touches[0], touches[-1]
        assert (first.x, first.y) == pytest.approx((0.5, 0.5), abs=0.01)
        assert (last.x, last.y) == pytest.approx((0.9, 0.1), abs=0.01)
        assert [(k.action, k.key) for k in keys] == [("down", "a"), ("up", "a")]

        # The server hears about it too, coalesced: far fewer messages than events.
        reports = [m for m in await sent_on_socket(page) if m["type"] == "input"]
        assert 1 <= len(reports) < len(events)
        gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(reports)]
        assert all(g >= 200 for g in gaps), gaps


async def test_stats_overlay_shows_figures_from_getstats(players: Players) -> None:
    async with system(players, workers=1) as (server, _):
        page = await players.open(server.url, viewport=DESKTOP, init_script=RECORDER_JS)
        await play(page)
        assert await page.is_hidden("#stats")
        await page.keyboard.press("F2")
        await page.wait_for_function(
            """() => [...document.querySelectorAll('#stats [data-stat]')]
                .every(el => el.textContent !== '\\u2013')""",
            timeout=WAIT_MS,
        )
        cells = await page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#stats [data-stat]')]"
            ".map(el => [el.dataset.stat, el.textContent]))"
        )
        assert cells["resolution"] == "720\u00d71280"
        assert cells["codec"] == "H264"
        assert float(cells["fps"]) > 0
        assert cells["bitrate"].endswith("bit/s")
        assert cells["rtt"].endswith(" ms")
        assert cells["audioCodec"] == "opus"
        assert cells["audioJitter"].endswith(" ms")
        assert cells["audioLost"] == "0"
        await page.click("#stats-button")
        assert await page.is_hidden("#stats")
        # F2 is the page's own key: the game never saw it.
        assert not [m for m in await sent_on_channel(page) if "F2" in m]


# A Web Audio analyser on the received audio track: the loudest sample of the
# last 20 ms, polled by the test.
ANALYSER_JS = """
() => {
  const track = document.querySelector('#stream').srcObject.getAudioTracks()[0];
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  window.__peak = () => {
    analyser.getFloatTimeDomainData(buf);
    let m = 0;
    for (const v of buf) m = Math.max(m, Math.abs(v));
    return m;
  };
  return ctx.state;
}
"""


async def test_the_games_sound_plays_after_play_and_mute_is_remembered(
    players: Players,
) -> None:
    async with system(players, workers=1) as (server, _):
        page = await players.open(server.url, viewport=DESKTOP)
        await play(page)
        # Play was the gesture: the sound is on, and the page says so.
        assert await page.evaluate("document.querySelector('#stream').muted") is False
        assert await page.evaluate("document.body.dataset.sound") == "on"
        assert await page.get_attribute("#mute-button", "aria-pressed") == "false"
        assert await page.evaluate(ANALYSER_JS) == "running"
        # The hum arrives; it is quiet.
        await page.wait_for_function("window.__peak() > 0.002", timeout=WAIT_MS)
        assert await page.evaluate("window.__peak()") < CLICK_THRESHOLD
        # A click on the picture: the game's click is heard.
        await page.mouse.click(*await picture_to_page(page, 0.5, 0.5))
        await page.wait_for_function(f"window.__peak() >= {CLICK_THRESHOLD}", timeout=WAIT_MS)

        await page.click("#mute-button")
        assert await page.evaluate("document.querySelector('#stream').muted") is True
        assert await page.evaluate("document.body.dataset.sound") == "muted"
        assert await page.evaluate("localStorage.getItem('playcast.muted')") == "1"
        await page.click("#leave")
        await server.wait_status(lambda doc: available(doc) >= 1, timeout=60)

        # A later visit starts muted, until the player asks for sound.
        again = await page.context.new_page()
        players.pages.append(again)
        await again.goto(server.url)
        await play(again)
        assert await again.evaluate("document.querySelector('#stream').muted") is True
        assert await again.get_attribute("#mute-button", "aria-pressed") == "true"
        await again.click("#mute-button")
        assert await again.evaluate("document.querySelector('#stream').muted") is False
        assert await again.evaluate("localStorage.getItem('playcast.muted')") == "0"
