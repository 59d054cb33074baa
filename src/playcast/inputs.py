"""Player input as sent on the WebRTC data channel ``input``.

Coordinates are normalized to the video picture: (0, 0) top left, (1, 1)
bottom right, so they survive any scaling between device and browser.

The page also says on that channel how its picture is doing (``Picture``, not
an input: it never reaches the game), and hears the worker's estimate of its
link there (``{"type": "link", ...}``, docs/network.md).
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


class Picture(msgspec.Struct, tag_field="type", tag="picture", kw_only=True):
    """The page's picture stopped while connected (``frozen``: no frame for 2 s),
    or moves again (``moving``, after ``still_ms`` without a frame)."""

    state: Literal["frozen", "moving"]
    still_ms: Annotated[int, msgspec.Meta(ge=0)] = 0


InputEvent = Touch | Key

_decoder: msgspec.json.Decoder[InputEvent] = msgspec.json.Decoder(InputEvent)
_channel: msgspec.json.Decoder[InputEvent | Picture] = msgspec.json.Decoder(InputEvent | Picture)


class BadInput(ValueError):
    pass


def decode_input(data: str | bytes) -> InputEvent:
    try:
        event: InputEvent = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise BadInput(str(exc)) from None
    return event


def decode_message(data: str | bytes) -> InputEvent | Picture:
    """Anything the page says on the ``input`` channel."""
    try:
        message: InputEvent | Picture = _channel.decode(data)
    except msgspec.DecodeError as exc:
        raise BadInput(str(exc)) from None
    return message
