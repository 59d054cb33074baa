"""Player input as sent on the WebRTC data channel ``input``.

Coordinates are normalized to the video picture: (0, 0) top left, (1, 1)
bottom right, so they survive any scaling between device and browser.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
PointerId = Annotated[int, msgspec.Meta(ge=0, le=31)]


class Touch(msgspec.Struct, tag_field="type", tag="touch", kw_only=True):
    action: Literal["down", "move", "up", "cancel"]
    id: PointerId = 0
    x: Unit
    y: Unit


class Key(msgspec.Struct, tag_field="type", tag="key", kw_only=True):
    action: Literal["down", "up"]
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


InputEvent = Touch | Key

_decoder: msgspec.json.Decoder[InputEvent] = msgspec.json.Decoder(InputEvent)


class BadInput(ValueError):
    pass


def decode_input(data: str | bytes) -> InputEvent:
    try:
        event: InputEvent = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise BadInput(str(exc)) from None
    return event
