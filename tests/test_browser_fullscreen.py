"""Full screen from the keyboard, and a picture the browser keeps its hands off.

Headless Chromium enters full screen without changing the window's size, so
the test then grows the viewport to a screen's size, as a real full screen
does: the picture moves and grows, and taps (and keys at the pointer, and the
overlay's markers) must follow it.
"""

from __future__ import annotations

import pytest
from browser_support import (
    DESKTOP,
    PHONE,
    RECORDER_JS,
    WAIT_MS,
    Players,
    picture_to_page,
    play,
    sent_on_channel,
    system,
    wait_white,
)
from playwright.async_api import Page

from playcast.inputs import Key, decode_input

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

# Records portrait-lock requests: a desktop refuses them (NotSupportedError),
# so this is how the test sees the page ask.
ORIENTATION_JS = """
window.__locks = [];
if (screen.orientation) {
  screen.orientation.lock = (o) => { window.__locks.push(o); return Promise.resolve(); };
}
"""

SCREEN = {"width": 1920, "height": 1080}
WAKE_LOCK_HELD = "(l => !!l && !l.released)(window.playcast.session.wakeLock)"


async def page_to_picture(page: Page, px: float, py: float) -> tuple[float, float]:
    """The picture point under page point (px, py), computed here, not by the page's code."""
    left, top, width, height, vw, vh = await page.evaluate(
        """() => { const v = document.querySelector('#stream'); const r = v.getBoundingClientRect();
            return [r.left, r.top, r.width, r.height, v.videoWidth, v.videoHeight]; }"""
    )
    scale = min(width / vw, height / vh)
    pw, ph = vw * scale, vh * scale
    return (px - left - (width - pw) / 2) / pw, (py - top - (height - ph) / 2) / ph


async def test_f_goes_full_screen_and_taps_still_land_under_the_pointer(
    players: Players,
) -> None:
    async with system(players, workers=1) as (server, _):
        page = await players.open(
            server.url, viewport=DESKTOP, init_script=RECORDER_JS + ORIENTATION_JS
        )
        await play(page)
        await page.wait_for_function("document.body.dataset.keymap === 'ready'", timeout=WAIT_MS)
        await page.wait_for_function(WAKE_LOCK_HELD, timeout=WAIT_MS)
        assert await page.get_attribute("#fullscreen-button", "title") == "Full screen (F)"
        # The keys panel open (its markers stay up), the mouse resting on the picture.
        await page.click("#keys-button")
        await page.wait_for_selector("#keymap[data-mode=edit]", timeout=WAIT_MS)
        pointer = await picture_to_page(page, 0.65, 0.25)
        await page.mouse.move(*pointer)

        await page.keyboard.press("f")
        await page.wait_for_function(
            "document.fullscreenElement === document.documentElement", timeout=WAIT_MS
        )
        await page.wait_for_function("window.__locks.length > 0", timeout=WAIT_MS)
        assert await page.evaluate("window.__locks") == ["portrait"]
        assert await page.get_attribute("#fullscreen-button", "aria-pressed") == "true"
        assert await page.evaluate(WAKE_LOCK_HELD), "full screen dropped the wake lock"

        await page.set_viewport_size(SCREEN)
        await page.wait_for_function(
            "w => document.querySelector('#stream').getBoundingClientRect().width === w",
            arg=SCREEN["width"],
            timeout=WAIT_MS,
        )
        # The markers moved with the picture.
        card2 = await page.evaluate("(k => k.spot(k.node('Digit2')))(window.playcast.keymap)")
        await page.wait_for_function(
            """([x, y]) => { const r = document.querySelector(
                    '#keymap .keymap-marker[data-key="Digit2"]').getBoundingClientRect();
                return Math.abs(r.left + r.width / 2 - x) <= 1
                    && Math.abs(r.top + r.height / 2 - y) <= 1; }""",
            arg=await picture_to_page(page, card2["x"], card2["y"]),
            timeout=WAIT_MS,
        )
        # The mouse has not moved, the picture has: Space taps what is under it now.
        under = await page_to_picture(page, *pointer)
        assert under != pytest.approx((0.65, 0.25), abs=0.05)
        await page.keyboard.press("Space")
        await wait_white(page, [under])
        x, y = 0.3, 0.6
        await page.mouse.click(*await picture_to_page(page, x, y))
        await wait_white(page, [(x, y)])
        await page.click("[data-keys=done]")

        # F again leaves full screen; so does the button.
        await page.keyboard.press("F")
        await page.wait_for_function("document.fullscreenElement === null", timeout=WAIT_MS)
        assert await page.get_attribute("#fullscreen-button", "aria-pressed") == "false"
        await page.click("#fullscreen-button")
        await page.wait_for_function(
            "document.fullscreenElement === document.documentElement", timeout=WAIT_MS
        )
        await page.click("#fullscreen-button")
        await page.wait_for_function("document.fullscreenElement === null", timeout=WAIT_MS)

        keys = {e.key for e in map(decode_input, await sent_on_channel(page)) if isinstance(e, Key)}
        assert not keys & {"f", "F", " "}, keys


async def test_the_picture_takes_no_browser_gestures_on_a_phone(players: Players) -> None:
    async with system(players, workers=0) as (server, _):
        page = await players.open(server.url, viewport=PHONE, touch=True)
        await page.wait_for_function("document.body.dataset.keymap === 'ready'", timeout=WAIT_MS)
        styles = await page.evaluate(
            """() => {
                const css = (sel) => getComputedStyle(document.querySelector(sel));
                return {
                    root: css('html').overscrollBehaviorY,
                    body: css('body').overscrollBehaviorY,
                    picture: css('#stream').touchAction,
                    marker: css('#keymap .keymap-marker').touchAction,
                    keysButton: css('#keys-button').display,
                };
            }"""
        )
        # No pull-to-refresh (the root's overscroll), no pan or double-tap zoom
        # on the picture or on a marker, and no keys button without a keyboard.
        assert styles == {
            "root": "none",
            "body": "none",
            "picture": "none",
            "marker": "none",
            "keysButton": "none",
        }
