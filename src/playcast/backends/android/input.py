"""Touches and keys as scrcpy control messages, and the fingers that are down.

The phone takes at most ten fingers, frees a pointer only on ACTION_UP, and
creates one for any id it has not seen: so an 11th finger is never sent, a
move or up of a finger that is not down is dropped (a ghost finger
otherwise), and a cancelled touch lifts where it was.
"""

from __future__ import annotations

import logging
from typing import Literal

from playcast.backends.scrcpy import (
    MAX_POINTERS,
    KeyAction,
    MotionAction,
    android_keycode,
    encode_inject_keycode,
    encode_inject_touch,
    to_video_point,
)

log = logging.getLogger("playcast.android")


def touch_message(
    motion: MotionAction, pointer_id: int, x: float, y: float, size: tuple[int, int]
) -> bytes:
    width, height = size
    px, py = to_video_point(x, y, width, height)
    pressure = 0.0 if motion is MotionAction.UP else 1.0
    return encode_inject_touch(motion, pointer_id, px, py, width, height, pressure)


def key_message(action: Literal["down", "up"], key: str) -> bytes | None:
    """None for a key the phone has no keycode for."""
    mapped = android_keycode(key)
    if mapped is None:
        return None
    keycode, meta = mapped
    key_action = KeyAction.DOWN if action == "down" else KeyAction.UP
    return encode_inject_keycode(key_action, keycode, 0, meta)


class Fingers:
    """The fingers down on the phone, by pointer id, where they last were."""

    def __init__(self) -> None:
        self._down: dict[int, tuple[float, float]] = {}

    def touch(
        self,
        action: Literal["down", "move", "up", "cancel"],
        pointer_id: int,
        x: float,
        y: float,
        size: tuple[int, int],
    ) -> bytes | None:
        """The message for one touch, or None when it must not be sent."""
        down = pointer_id in self._down
        if not down and len(self._down) >= MAX_POINTERS:
            # The server would ignore an 11th finger: do not send it at all.
            log.debug("touch for an 11th pointer (%d) dropped", pointer_id)
            return None
        if action == "down":
            motion = MotionAction.MOVE if down else MotionAction.DOWN
            self._down[pointer_id] = (x, y)
        elif not down:
            # The server would create a pointer that never lifts: a ghost finger.
            return None
        elif action == "move":
            motion = MotionAction.MOVE
            self._down[pointer_id] = (x, y)
        else:
            # scrcpy frees a pointer only on ACTION_UP; a CANCEL would leave it
            # pressed for good, so a cancelled touch lifts where it was.
            motion = MotionAction.UP
            del self._down[pointer_id]
        return touch_message(motion, pointer_id, x, y, size)

    def lift_all(self, size: tuple[int, int]) -> list[bytes]:
        """Lift every finger still down, so the next player starts clean."""
        down, self._down = self._down, {}
        return [
            touch_message(MotionAction.UP, pointer_id, x, y, size)
            for pointer_id, (x, y) in down.items()
        ]
