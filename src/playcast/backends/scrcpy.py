"""The scrcpy 3.3.x socket protocol, as pure functions (no I/O).

Pinned release: scrcpy 3.3.4 (its server file must be this exact version: the
server refuses a client that announces another one). Sources of truth, all in
the Genymobile/scrcpy repository at that tag:

- ``app/src/server.c``: the server's command line and the socket order (video
  first, with one dummy byte when ``tunnel_forward=true``, then audio, then
  control), the 64-byte device name;
- ``server/.../device/Streamer.java`` and ``audio/AudioEncoder.java``: the
  audio socket (a 4-byte codec id, or a disabled-stream code: 0 when the device
  cannot capture, 1 on a configuration error; then packets framed like video,
  the first a config packet holding the OpusHead);
- ``app/src/demuxer.c``: the codec header (codec id, width, height as u32 BE)
  and the 12-byte packet header (u64 PTS with the config flag in bit 63 and the
  key-frame flag in bit 62, then a u32 length);
- ``app/src/packet_merger.c``: a config packet is prepended to the next one;
- ``app/src/control_msg.c`` / ``app/tests/test_control_msg_serialize.c`` and
  ``server/.../control/ControlMessageReader.java``: control message layouts;
- ``server/.../control/ControlMessage.java``: the message type numbers.

Everything here is big-endian, as in scrcpy.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

# ProtocolError: the one error for what a device sends wrong, its H.264 included.
from playcast.backends.nal import ProtocolError as ProtocolError
from playcast.backends.nal import has_sps

SCRCPY_VERSION: Final = "3.3.4"
DEVICE_SERVER_PATH: Final = "/data/local/tmp/scrcpy-server.jar"
SERVER_CLASS: Final = "com.genymobile.scrcpy.Server"
SOCKET_NAME_PREFIX: Final = "scrcpy_"

DEVICE_NAME_FIELD_LENGTH: Final = 64
CODEC_META_SIZE: Final = 12
PACKET_HEADER_SIZE: Final = 12

CODEC_ID_H264: Final = 0x68323634  # "h264"
CODEC_ID_OPUS: Final = 0x6F707573  # "opus"
CODEC_ID_DISABLED: Final = 0  # the device explicitly disabled the stream
CODEC_ID_ERROR: Final = 1  # a configuration error on the device

# PointersState.MAX_POINTERS: the server ignores a touch for an 11th pointer.
MAX_POINTERS: Final = 10

PACKET_FLAG_CONFIG: Final = 1 << 63
PACKET_FLAG_KEY_FRAME: Final = 1 << 62
PACKET_PTS_MASK: Final = PACKET_FLAG_KEY_FRAME - 1

# MediaCodecInfo.CodecProfileLevel.AVCProfileBaseline
AVC_PROFILE_BASELINE: Final = 1


class ControlType(enum.IntEnum):
    """``ControlMessage.TYPE_*`` (one byte, first in every control message)."""

    INJECT_KEYCODE = 0
    INJECT_TEXT = 1
    INJECT_TOUCH_EVENT = 2
    INJECT_SCROLL_EVENT = 3
    BACK_OR_SCREEN_ON = 4
    EXPAND_NOTIFICATION_PANEL = 5
    EXPAND_SETTINGS_PANEL = 6
    COLLAPSE_PANELS = 7
    GET_CLIPBOARD = 8
    SET_CLIPBOARD = 9
    SET_DISPLAY_POWER = 10
    ROTATE_DEVICE = 11
    UHID_CREATE = 12
    UHID_INPUT = 13
    UHID_DESTROY = 14
    OPEN_HARD_KEYBOARD_SETTINGS = 15
    START_APP = 16
    RESET_VIDEO = 17


class MotionAction(enum.IntEnum):
    """``AMOTION_EVENT_ACTION_*``."""

    DOWN = 0
    UP = 1
    MOVE = 2
    CANCEL = 3


class KeyAction(enum.IntEnum):
    """``AKEY_EVENT_ACTION_*``."""

    DOWN = 0
    UP = 1


# --- control messages (client -> device) -------------------------------------

_KEYCODE = struct.Struct(">BBiII")  # type, action, keycode, repeat, metastate
_TOUCH = struct.Struct(">BBQiiHHHII")  # ..., pointer id, x, y, w, h, pressure, buttons


def to_fixed_point_16(value: float) -> int:
    """scrcpy's ``to_fixed_point_16``: [0, 1] to u16, 1.0 saturating at 0xffff."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"pressure {value} outside [0, 1]")
    return min(int(value * 65536.0), 0xFFFF)


def encode_inject_keycode(
    action: KeyAction, keycode: int, repeat: int = 0, metastate: int = 0
) -> bytes:
    """INJECT_KEYCODE: 14 bytes."""
    return _KEYCODE.pack(ControlType.INJECT_KEYCODE, action, keycode, repeat, metastate)


def encode_inject_touch(
    action: MotionAction,
    pointer_id: int,
    x: int,
    y: int,
    width: int,
    height: int,
    pressure: float,
    action_button: int = 0,
    buttons: int = 0,
) -> bytes:
    """INJECT_TOUCH_EVENT: 32 bytes.

    ``width``/``height`` must be the current video size: the server drops an
    event made for another size (the device may have rotated meanwhile).
    """
    return _TOUCH.pack(
        ControlType.INJECT_TOUCH_EVENT,
        action,
        pointer_id & 0xFFFF_FFFF_FFFF_FFFF,
        x,
        y,
        width,
        height,
        to_fixed_point_16(pressure),
        action_button,
        buttons,
    )


def encode_reset_video() -> bytes:
    """RESET_VIDEO: the server restarts its encoder, so config and a keyframe follow."""
    return bytes((ControlType.RESET_VIDEO,))


def to_video_point(x: float, y: float, width: int, height: int) -> tuple[int, int]:
    """Normalized picture coordinates to a pixel of the ``width`` x ``height`` video."""
    px = min(max(int(x * width), 0), width - 1)
    py = min(max(int(y * height), 0), height - 1)
    return px, py


# --- video socket (device -> client) -----------------------------------------


def parse_device_meta(data: bytes) -> str:
    """The 64-byte, NUL-padded device name sent first on the first socket."""
    if len(data) != DEVICE_NAME_FIELD_LENGTH:
        raise ProtocolError(f"device meta is {len(data)} bytes, expected 64")
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_codec_id(data: bytes) -> int:
    """The first 4 bytes of the video stream; only H.264 is followed by a size."""
    (codec_id,) = struct.unpack(">I", data)
    if codec_id == CODEC_ID_DISABLED:
        raise ProtocolError("the device disabled the video stream")
    if codec_id == CODEC_ID_ERROR:
        raise ProtocolError("video configuration error on the device (see the server log)")
    if codec_id != CODEC_ID_H264:
        raise ProtocolError(f"codec 0x{codec_id:08x} is not H.264")
    return int(codec_id)


def parse_video_size(data: bytes) -> tuple[int, int]:
    """The 8 bytes after the codec id: initial width and height."""
    width, height = struct.unpack(">II", data)
    if not (0 < width <= 0xFFFF and 0 < height <= 0xFFFF):
        raise ProtocolError(f"implausible video size {width}x{height}")
    return int(width), int(height)


class AudioStream(enum.Enum):
    """What the first 4 bytes of the audio socket said."""

    OPUS = "opus"
    DISABLED = "disabled"  # Android < 11, or capture refused: video only
    ERROR = "error"  # a configuration error: the server is about to exit


def parse_audio_codec_id(data: bytes) -> AudioStream:
    """The audio socket's codec id, or ``Streamer.writeDisableStream``'s code."""
    (codec_id,) = struct.unpack(">I", data)
    if codec_id == CODEC_ID_OPUS:
        return AudioStream.OPUS
    if codec_id == CODEC_ID_DISABLED:
        return AudioStream.DISABLED
    if codec_id == CODEC_ID_ERROR:
        return AudioStream.ERROR
    raise ProtocolError(f"audio codec 0x{codec_id:08x} is not Opus")


@dataclass(frozen=True, slots=True)
class PacketHeader:
    config: bool
    keyframe: bool
    pts_us: int  # 0 for config packets
    size: int


def parse_packet_header(data: bytes) -> PacketHeader:
    pts_flags, size = struct.unpack(">QI", data)
    if size == 0:
        raise ProtocolError("empty packet")
    config = bool(pts_flags & PACKET_FLAG_CONFIG)
    return PacketHeader(
        config=config,
        keyframe=bool(pts_flags & PACKET_FLAG_KEY_FRAME),
        pts_us=0 if config else pts_flags & PACKET_PTS_MASK,
        size=size,
    )


def encode_packet_header(pts_us: int, size: int, *, config: bool, keyframe: bool) -> bytes:
    """What the server's ``Streamer.writeFrameMeta`` writes (for the fake device)."""
    if config:
        flags = PACKET_FLAG_CONFIG
    else:
        flags = (pts_us & PACKET_PTS_MASK) | (PACKET_FLAG_KEY_FRAME if keyframe else 0)
    return struct.pack(">QI", flags, size)


@dataclass(frozen=True, slots=True)
class MediaPacket:
    data: bytes  # Annex B; every keyframe carries SPS/PPS in front
    pts_us: int
    keyframe: bool


class PacketMerger:
    """scrcpy's packet merger, plus SPS/PPS in front of every keyframe.

    scrcpy prepends a config packet to the next media packet. A browser that
    joins mid-stream also needs the parameter sets with every later keyframe,
    and many hardware encoders send them only once per encoder session, so the
    last config is kept and prepended to keyframes that lack it.
    """

    def __init__(self) -> None:
        self.config = b""
        self._pending = b""

    def feed(self, header: PacketHeader, payload: bytes) -> MediaPacket | None:
        if header.config:
            self.config = payload
            self._pending = payload
            return None
        if self._pending:
            data = self._pending + payload
            self._pending = b""
        elif header.keyframe and self.config and not has_sps(payload):
            data = self.config + payload
        else:
            data = payload
        return MediaPacket(data, header.pts_us, header.keyframe)


# --- the server's command line ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerOptions:
    scid: int  # 31-bit, names the device socket scrcpy_%08x
    version: str = SCRCPY_VERSION
    max_size: int = 1280
    video_bit_rate: int = 4_000_000
    max_fps: int = 60
    keyframe_interval: int = 2  # seconds
    extra_codec_options: str = ""  # appended, e.g. "level=4096,latency=0"
    log_level: str = "info"
    stay_awake: bool = True
    audio: bool = False  # Opus, from the device's playback (Android 11+)
    audio_bit_rate: int = 128_000

    @property
    def socket_name(self) -> str:
        return f"{SOCKET_NAME_PREFIX}{self.scid:08x}"


def server_command(opts: ServerOptions) -> list[str]:
    """``adb shell`` arguments that start the server, as ``app/src/server.c`` builds them."""
    if not 0 <= opts.scid < 1 << 31:
        raise ValueError("scid is a 31-bit value")
    codec_options = f"profile={AVC_PROFILE_BASELINE},i-frame-interval={opts.keyframe_interval}"
    if opts.extra_codec_options:
        codec_options += "," + opts.extra_codec_options
    for value in (opts.version, codec_options, opts.log_level):
        # Passed through the device shell unquoted, like scrcpy's validate_string().
        if any(c in value for c in " ;'\"*$?&`#\\|<>[]{}()!~\r\n"):
            raise ValueError(f"unsafe server parameter {value!r}")
    args = [
        f"CLASSPATH={DEVICE_SERVER_PATH}",
        "app_process",
        "/",
        SERVER_CLASS,
        opts.version,
        f"scid={opts.scid:08x}",
        f"log_level={opts.log_level}",
        "tunnel_forward=true",
        f"audio={'true' if opts.audio else 'false'}",
        "control=true",
        "video_codec=h264",
        f"video_bit_rate={opts.video_bit_rate}",
        f"max_fps={opts.max_fps}",
        f"video_codec_options={codec_options}",
        # The control socket would otherwise carry clipboard changes to us.
        "clipboard_autosync=false",
    ]
    if opts.audio:
        args += ["audio_codec=opus", f"audio_bit_rate={opts.audio_bit_rate}"]
    if opts.max_size:
        args.append(f"max_size={opts.max_size}")
    if opts.stay_awake:
        args.append("stay_awake=true")
    return args


# --- keys -------------------------------------------------------------------------

AMETA_SHIFT_ON: Final = 0x01
AMETA_SHIFT_LEFT_ON: Final = 0x40

# DOM KeyboardEvent.key -> AKEYCODE_*. Escape is Android's BACK: the page has
# no other way to press it. Home/End move the cursor; they never leave the game.
_NAMED_KEYS: Final[dict[str, int]] = {
    "Escape": 4,
    "GoBack": 4,
    "BrowserBack": 4,
    "Enter": 66,
    "Backspace": 67,
    "Tab": 61,
    " ": 62,
    "ArrowUp": 19,
    "ArrowDown": 20,
    "ArrowLeft": 21,
    "ArrowRight": 22,
    "Delete": 112,
    "Home": 122,
    "End": 123,
    "PageUp": 92,
    "PageDown": 93,
    "ContextMenu": 82,
    "AudioVolumeUp": 24,
    "AudioVolumeDown": 25,
    "AudioVolumeMute": 164,
    ",": 55,
    ".": 56,
    "`": 68,
    "-": 69,
    "=": 70,
    "[": 71,
    "]": 72,
    "\\": 73,
    ";": 74,
    "'": 75,
    "/": 76,
    **{f"F{n}": 130 + n for n in range(1, 13)},
}


def android_keycode(key: str) -> tuple[int, int] | None:
    """(AKEYCODE, metastate) for a DOM key name, or None for keys we do not send."""
    if key in _NAMED_KEYS:
        return _NAMED_KEYS[key], 0
    if len(key) == 1 and key.isascii():
        if "0" <= key <= "9":
            return 7 + ord(key) - ord("0"), 0
        if "a" <= key <= "z":
            return 29 + ord(key) - ord("a"), 0
        if "A" <= key <= "Z":
            return 29 + ord(key) - ord("A"), AMETA_SHIFT_ON | AMETA_SHIFT_LEFT_ON
    return None
