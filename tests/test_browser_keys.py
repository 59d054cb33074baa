"""Key maps in headless Chromium against a real server and synthetic worker.

A mapped key must make the same touch a finger makes (the synthetic game
draws its white disc there, read back from the decoded video) and no `key`
message; one press is one touch however long the key is held; the overlay
shows where each key taps; a player's moved spots are kept; a bad map is
refused loudly and the page plays without it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import (
    DESKTOP,
    RECORDER_JS,
    WAIT_MS,
    Players,
    is_white,
    picture_to_page,
    play,
    sent_on_channel,
    system,
    wait_white,
)
from playcast_testing.servers import ServerProcess
from playwright.async_api import Page, Route

from playcast.inputs import InputEvent, Key, Touch, decode_input

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

GAME = "com.supercell.clashroyale"
MAP_FILE = Path(__file__).parents[1] / f"src/playcast/web/static/keymaps/{GAME}.json"
MAP_URL = f"**/static/keymaps/{GAME}.json"
STORAGE = f"playcast.keys.{GAME}"


def spot(key: str) -> tuple[float, float]:
    """Where the shipped map says ``key`` taps, read from the file itself."""
    for node in json.loads(MAP_FILE.read_text())["nodes"]:
        if node["key"] == key:
            return node["at"]["x"], node["at"]["y"]
    raise KeyError(key)


async def wait_keymap(page: Page, status: str = "ready") -> None:
    await page.wait_for_function(
        "s => document.body.dataset.keymap === s", arg=status, timeout=WAIT_MS
    )


async def events(page: Page) -> list[InputEvent]:
    return [decode_input(m) for m in await sent_on_channel(page)]


async def wait_sent(page: Page, what: str, count: int = 1) -> None:
    """Wait until ``count`` messages on the input channel contain ``what``."""
    await page.wait_for_function(
        "([w, n]) => window.__sent.channel.filter(m => m.data.includes(w)).length >= n",
        arg=[what, count],
        timeout=WAIT_MS,
    )


async def serve_map(page: Page, body: str) -> None:
    """Answer the page's request for the game's map with ``body``, then reload."""

    async def fulfill(route: Route) -> None:
        await route.fulfill(status=200, content_type="application/json", body=body)

    await page.route(MAP_URL, fulfill)
    await page.reload()


@contextlib.asynccontextmanager
async def playing(
    players: Players, map_body: str | None = None
) -> AsyncIterator[tuple[ServerProcess, Page]]:
    """A server, a synthetic worker and a desktop page playing, its key map
    loaded (``map_body`` served as the game's map instead of the shipped one)."""
    async with system(players, workers=1) as (server, _):
        page = await players.open(server.url, viewport=DESKTOP, init_script=RECORDER_JS)
        if map_body is not None:
            await serve_map(page, map_body)
        await play(page)
        await wait_keymap(page)
        yield server, page


async def markers(page: Page) -> dict[str, list[Any]]:
    """Each marker's key: its centre on the page and its label."""
    found: dict[str, list[Any]] = await page.evaluate(
        """Object.fromEntries([...document.querySelectorAll('#keymap .keymap-marker')].map(m => {
            const r = m.getBoundingClientRect();
            return [m.dataset.key, [r.left + r.width / 2, r.top + r.height / 2, m.textContent]];
        }))"""
    )
    return found


async def test_a_card_key_then_a_click_or_space_plays_card_2_where_the_pointer_is(
    players: Players,
) -> None:
    async with playing(players) as (_, page):
        card2 = spot("Digit2")
        assert not await is_white(page, *card2)
        await page.keyboard.press("Digit2")
        await wait_white(page, [card2])

        # Then a click on the arena, letterboxed picture and all.
        x, y = 0.3, 0.4
        await page.mouse.click(*await picture_to_page(page, x, y))
        await wait_white(page, [(x, y)])
        # Or Space, where the mouse is.
        sx, sy = 0.7, 0.3
        await page.mouse.move(*await picture_to_page(page, sx, sy))
        await page.keyboard.press("Space")
        await wait_white(page, [(sx, sy)])
        await wait_sent(page, '"up"', 3)

        sent = await events(page)
        assert not [e for e in sent if isinstance(e, Key)], "a mapped key also went as a key"
        downs = [e for e in sent if isinstance(e, Touch) and e.action == "down"]
        assert [(d.x, d.y) for d in downs] == [
            card2,
            pytest.approx((x, y), abs=0.005),
            pytest.approx((sx, sy), abs=0.005),
        ]
        # A key's tap is a finger's: down and up at the same spot, one id.
        assert [(e.action, e.x, e.y) for e in sent if isinstance(e, Touch)][:2] == [
            ("down", *card2),
            ("up", *card2),
        ]


async def test_a_held_key_makes_one_touch_and_unmapped_keys_go_as_keys(
    players: Players,
) -> None:
    async with playing(players) as (_, page):
        await page.keyboard.down("Digit3")
        for _ in range(5):  # the keyboard's auto-repeat: repeat=true each time
            await page.keyboard.down("Digit3")
        await wait_sent(page, '"up"')  # the tap's finger lifts on its own
        for _ in range(5):
            await page.keyboard.down("Digit3")
        await page.keyboard.up("Digit3")
        # A key the map does not name goes to the game as today; its up is the
        # last message, so everything before it has been sent.
        await page.keyboard.press("b")
        await wait_sent(page, '"key":"b"', 2)

        sent = await events(page)
        card3 = spot("Digit3")
        assert sent == [
            Touch(action="down", id=0, x=card3[0], y=card3[1]),
            Touch(action="up", id=0, x=card3[0], y=card3[1]),
            Key(action="down", key="b"),
            Key(action="up", key="b"),
        ]
        # Released and pressed again: a second touch, as a second tap would be.
        await page.keyboard.press("Digit3")
        await wait_sent(page, '"up"', 3)
        assert len([e for e in await events(page) if isinstance(e, Touch)]) == 4


async def test_the_overlay_shows_each_key_where_it_taps_while_question_mark_is_held(
    players: Players,
) -> None:
    async with playing(players) as (_, page):
        assert await page.is_hidden("#keymap")
        await page.keyboard.down("Shift")
        await page.keyboard.down("Slash")  # "?"
        await page.wait_for_selector("#keymap[data-mode=hint]", state="visible", timeout=WAIT_MS)

        found = await markers(page)
        assert {k: v[2] for k, v in found.items()} == {
            "Digit1": "1",
            "Digit2": "2",
            "Digit3": "3",
            "Digit4": "4",
            "KeyE": "E",
        }
        for key, (cx, cy, _) in found.items():
            px, py = await picture_to_page(page, *spot(key))
            assert (cx, cy) == pytest.approx((px, py), abs=1), key
        # Faint, and never in the way of a click on the game.
        style = await page.evaluate(
            """(m => [getComputedStyle(m).opacity, getComputedStyle(m.parentElement).pointerEvents])
               (document.querySelector('#keymap .keymap-marker'))"""
        )
        assert float(style[0]) < 1 and style[1] == "none"
        x, y = spot("Digit4")
        await page.mouse.click(*await picture_to_page(page, x, y))
        await wait_white(page, [(x, y)])

        # Shift let go first: the "?" key still hides the overlay by its code.
        await page.keyboard.up("Shift")
        await page.keyboard.up("Slash")
        await page.wait_for_selector("#keymap", state="hidden", timeout=WAIT_MS)
        keys = {e.key for e in await events(page) if isinstance(e, Key)}
        assert not keys & {"?", "/"}, keys


async def test_a_moved_marker_is_where_its_key_taps_and_is_kept_until_reset(
    players: Players,
) -> None:
    async with playing(players) as (server, page):
        await page.click("#keys-button")
        await page.wait_for_selector("#keymap[data-mode=edit]", timeout=WAIT_MS)
        assert await page.is_visible("#keys-panel")
        cx, cy, _ = (await markers(page))["Digit1"]
        target = (0.5, 0.3)
        await page.mouse.move(cx, cy)
        await page.mouse.down()
        await page.mouse.move(*await picture_to_page(page, *target), steps=8)
        await page.mouse.up()
        saved = json.loads(await page.evaluate(f"localStorage.getItem('{STORAGE}')"))
        assert (saved["spots"]["Digit1"]["x"], saved["spots"]["Digit1"]["y"]) == pytest.approx(
            target, abs=0.005
        )
        assert not await events(page), "dragging a marker touched the game"

        await page.click("[data-keys=done]")
        await page.wait_for_selector("#keymap", state="hidden", timeout=WAIT_MS)
        await page.keyboard.press("Digit1")
        await wait_white(page, [target])

        # The same player's next visit finds the spot where they left it.
        spot_js = "(k => { const s = k.spot(k.node('Digit1')); return [s.x, s.y]; })"
        later = await page.context.new_page()
        players.pages.append(later)
        await later.goto(server.url)
        await wait_keymap(later)
        assert await later.evaluate(f"{spot_js}(window.playcast.keymap)") == pytest.approx(
            target, abs=0.005
        )

        # Reset: the map as shipped, nothing stored.
        await page.click("#keys-button")
        await page.click("[data-keys=reset]")
        assert await page.evaluate(f"localStorage.getItem('{STORAGE}')") is None
        assert await page.evaluate(f"{spot_js}(window.playcast.keymap)") == list(spot("Digit1"))
        cx, cy, _ = (await markers(page))["Digit1"]
        assert (cx, cy) == pytest.approx(await picture_to_page(page, *spot("Digit1")), abs=1)


async def test_the_player_can_turn_the_keys_and_the_overlay_off(players: Players) -> None:
    async with playing(players) as (_, page):
        await page.click("#keys-button")
        await page.uncheck("[data-keys=enabled]")
        await page.uncheck("[data-keys=hints]")
        await page.click("[data-keys=done]")
        assert json.loads(await page.evaluate(f"localStorage.getItem('{STORAGE}')")) == {
            "spots": {},
            "off": True,
            "hints": False,
        }
        # Keys off: Digit2 is a key again, as with no map.
        await page.keyboard.press("Digit2")
        await wait_sent(page, '"key":"2"', 2)
        assert not [e for e in await events(page) if isinstance(e, Touch)]
        # Overlay off: "?" shows nothing (and is still not the game's).
        await page.keyboard.down("Shift")
        await page.keyboard.down("Slash")
        assert await page.is_hidden("#keymap")
        await page.keyboard.up("Slash")
        await page.keyboard.up("Shift")
        assert not [e for e in await events(page) if isinstance(e, Key) and e.key in "?/"]


DRAG_MAP = {
    "format": 1,
    "game": GAME,
    "nodes": [
        {"type": "drag", "key": "KeyD", "from": {"x": 0.2, "y": 0.9}, "duration_ms": 120},
    ],
}


async def test_a_drag_key_slides_one_finger_from_its_spot_to_the_pointer(
    players: Players,
) -> None:
    async with playing(players, json.dumps(DRAG_MAP)) as (_, page):
        end = (0.7, 0.3)
        await page.mouse.move(*await picture_to_page(page, *end))
        await page.keyboard.down("KeyD")
        await page.keyboard.down("KeyD")  # a repeat: no second drag
        await wait_white(page, [(0.2, 0.9)])
        await wait_white(page, [end])
        await wait_sent(page, '"up"')
        await page.keyboard.up("KeyD")

        sent = await events(page)
        assert all(isinstance(e, Touch) and e.id == 0 for e in sent)
        touches = [e for e in sent if isinstance(e, Touch)]
        assert [t.action for t in touches] == ["down"] + ["move"] * (len(touches) - 2) + ["up"]
        assert len(touches) >= 4
        assert (touches[0].x, touches[0].y) == (0.2, 0.9)
        assert (touches[-1].x, touches[-1].y) == pytest.approx(end, abs=0.005)
        ys = [t.y for t in touches]
        assert ys == sorted(ys, reverse=True), "the finger goes straight to the pointer"


async def test_a_bad_map_is_reported_and_the_page_plays_without_it(players: Players) -> None:
    bad = {
        "format": 1,
        "nodes": [
            {"type": "tap", "key": "Digit1", "at": {"x": 1.5, "y": 0.9}},
            {"type": "swipe", "key": "KeyQ"},
            {"type": "tap", "key": "KeyF", "at": {"x": 0.1, "y": 0.1}},
        ],
    }
    async with system(players, workers=1) as (server, _):
        page = await players.open(server.url, viewport=DESKTOP, init_script=RECORDER_JS)
        await serve_map(page, "{not json")
        await wait_keymap(page, "bad")
        await serve_map(page, json.dumps(bad))
        await wait_keymap(page, "bad")
        errors = [line for line in players.logs[0] if line.startswith("error: keymap:")]
        assert len(errors) == 2, players.logs[0]
        assert f"/static/keymaps/{GAME}.json was not loaded" in errors[0]
        assert "JSON" in errors[0]
        for problem in ("nodes[0].at.x", "nodes[1].type", "KeyF is the page's own key"):
            assert problem in errors[1], errors[1]

        await play(page)
        assert await page.is_hidden("#keys-button")
        await page.keyboard.press("Digit2")
        x, y = 0.4, 0.6
        await page.mouse.click(*await picture_to_page(page, x, y))
        await wait_white(page, [(x, y)])
        await wait_sent(page, '"up"', 2)
        sent = await events(page)
        assert sent[:2] == [Key(action="down", key="2"), Key(action="up", key="2")]


# Map documents and what parseKeymap must say about each (a part of its message).
BAD_MAPS: list[tuple[Any, str]] = [
    ([], "must be a JSON object"),
    ({"format": 2, "nodes": [{"type": "tap_at_pointer", "key": "Space"}]}, "format: must be 1"),
    ({"format": 1, "nodes": []}, "nodes: must be a list"),
    ({"format": 1, "nodes": [{"type": "tap_at_pointer", "key": "Space"}] * 65}, "at most 64"),
    (
        {"format": 1, "game": "other.game", "nodes": [{"type": "tap_at_pointer", "key": "Space"}]},
        'the map is for "other.game"',
    ),
    (
        {"format": 1, "nodes": [{"type": "tap_at_pointer", "key": "Space"}], "keys": 1},
        "unknown field keys",
    ),
    ({"format": 1, "nodes": ["Space"]}, "nodes[0]: must be an object"),
    ({"format": 1, "nodes": [{"type": "click", "key": "Space"}]}, "nodes[0].type: must be one of"),
    ({"format": 1, "nodes": [{"type": "tap_at_pointer", "key": "Digit 1"}]}, "KeyboardEvent.code"),
    ({"format": 1, "nodes": [{"type": "tap_at_pointer", "key": 5}]}, "KeyboardEvent.code"),
    ({"format": 1, "nodes": [{"type": "tap_at_pointer", "key": "F2"}]}, "F2 is the page's own key"),
    ({"format": 1, "nodes": [{"type": "tap_at_pointer", "key": "Slash"}]}, "page's own key"),
    ({"format": 1, "nodes": [{"type": "tap_at_pointer", "key": "ShiftLeft"}]}, "page's own key"),
    ({"format": 1, "nodes": [{"type": "tap_at_pointer", "key": "Space"}] * 2}, "mapped twice"),
    ({"format": 1, "nodes": [{"type": "tap", "key": "Digit1"}]}, 'nodes[0].at: must be {"x"'),
    (
        {"format": 1, "nodes": [{"type": "tap", "key": "Digit1", "at": {"x": "0.5", "y": 0.5}}]},
        "nodes[0].at.x: must be a number from 0 to 1",
    ),
    (
        {"format": 1, "nodes": [{"type": "tap", "key": "Digit1", "at": {"x": 0.5, "y": -0.1}}]},
        "nodes[0].at.y",
    ),
    (
        {"format": 1, "nodes": [{"type": "tap", "key": "Digit1", "pos": {"x": 0.5, "y": 0.5}}]},
        "unknown field pos for a tap",
    ),
    (
        {
            "format": 1,
            "nodes": [{"type": "tap_at_pointer", "key": "Space", "at": {"x": 0, "y": 0}}],
        },
        "unknown field at for a tap_at_pointer",
    ),
    (
        {"format": 1, "nodes": [{"type": "drag", "key": "KeyQ", "from": {"x": 0.5, "y": 0.9}}]},
        "nodes[0].duration_ms",
    ),
    (
        {
            "format": 1,
            "nodes": [
                {"type": "drag", "key": "KeyQ", "from": {"x": 0.5, "y": 0.9}, "duration_ms": 5000}
            ],
        },
        "from 20 to 3000",
    ),
    (
        {
            "format": 1,
            "nodes": [{"type": "tap_at_pointer", "key": "Space", "label": "too long a label"}],
        },
        "nodes[0].label",
    ),
]

PARSE_JS = """async (cases) => {
  const m = await import('/static/keymap.js');
  return cases.map(doc => {
    try { m.parseKeymap(doc, 'com.supercell.clashroyale'); return null; }
    catch (e) { return e instanceof m.KeymapError ? e.problems : 'threw ' + e; }
  });
}"""


async def test_parse_keymap_refuses_each_mistake_and_takes_the_shipped_map(
    players: Players,
) -> None:
    async with system(players, workers=0) as (server, _):
        page = await players.open(server.url)
        results = await page.evaluate(PARSE_JS, [doc for doc, _ in BAD_MAPS])
        for (doc, expected), problems in zip(BAD_MAPS, results, strict=True):
            assert isinstance(problems, list), (doc, problems)
            assert any(expected in p for p in problems), (expected, problems)

        shipped = await page.evaluate(
            """async () => {
                const m = await import('/static/keymap.js');
                const game = 'com.supercell.clashroyale';
                const doc = await (await fetch(`/static/keymaps/${game}.json`)).json();
                const spec = m.parseKeymap(doc, game);
                return spec.nodes.map(n => [n.key, n.type, n.label]);
            }"""
        )
        assert shipped == [
            ["Digit1", "tap", "1"],
            ["Digit2", "tap", "2"],
            ["Digit3", "tap", "3"],
            ["Digit4", "tap", "4"],
            ["Space", "tap_at_pointer", "Space"],
            ["KeyE", "tap", "E"],
        ]

        # Saved edits that make no sense are dropped, not trusted.
        kept = await page.evaluate(
            """async () => {
                const m = await import('/static/keymap.js');
                const spec = m.parseKeymap({format: 1, game: 'g', nodes: [
                    {type: 'tap', key: 'Digit1', at: {x: 0.1, y: 0.2}},
                    {type: 'tap', key: 'Digit2', at: {x: 0.3, y: 0.4}}]});
                localStorage.setItem('playcast.keys.g', JSON.stringify({spots: {
                    Digit1: {x: 0.5, y: 0.5}, Digit2: {x: 7, y: 0.5}, KeyZ: {x: 0.1, y: 0.1}}}));
                const good = new m.Keymap(spec, localStorage);
                localStorage.setItem('playcast.keys.g', '{damaged');
                const damaged = new m.Keymap(spec, localStorage);
                const at = (k, key) => { const s = k.spot(k.node(key)); return [s.x, s.y]; };
                return [at(good, 'Digit1'), at(good, 'Digit2'), [...good.spots.keys()],
                        at(damaged, 'Digit1'), damaged.enabled];
            }"""
        )
        assert kept == [[0.5, 0.5], [0.3, 0.4], ["Digit1"], [0.1, 0.2], True]
