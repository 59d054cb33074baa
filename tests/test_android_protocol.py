"""The scrcpy 3.3.4 wire format, byte for byte.

Expected bytes are written out by hand from scrcpy's own
app/tests/test_control_msg_serialize.c and app/src/demuxer.c, not computed
with the code under test.
"""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from playcast.backends.nal import (
    config_picture_size,
    has_sps,
    iter_nals,
)
from playcast.backends.scrcpy import (
    AudioStream,
    PacketHeader,
    PacketMerger,
    ProtocolError,
    ServerOptions,
    android_keycode,
    encode_inject_keycode,
    encode_inject_touch,
    encode_packet_header,
    encode_reset_video,
    parse_audio_codec_id,
    parse_codec_id,
    parse_device_meta,
    parse_packet_header,
    parse_video_size,
    server_command,
    to_fixed_point_16,
    to_video_point,
)
from playcast.backends.scrcpy import (
    KeyAction as K,
)
from playcast.backends.scrcpy import (
    MotionAction as M,
)


def test_inject_keycode_matches_scrcpy_test_vector() -> None:
    # test_serialize_inject_keycode: UP, AKEYCODE_ENTER, repeat 5, SHIFT_ON|SHIFT_LEFT_ON
    assert encode_inject_keycode(K.UP, 66, 5, 0x41) == bytes(
        [0x00, 0x01, 0, 0, 0, 0x42, 0, 0, 0, 0x05, 0, 0, 0, 0x41]
    )


def test_inject_touch_matches_scrcpy_test_vector() -> None:
    # test_serialize_inject_touch_event
    msg = encode_inject_touch(M.DOWN, 0x1234567887654321, 100, 200, 1080, 1920, 1.0, 1, 1)
    assert msg == bytes.fromhex(
        "02 00"  # INJECT_TOUCH_EVENT, AMOTION_EVENT_ACTION_DOWN
        "12 34 56 78 87 65 43 21"  # pointer id
        "00 00 00 64 00 00 00 c8"  # 100 200
        "04 38 07 80"  # 1080 1920
        "ff ff"  # pressure
        "00 00 00 01"  # AMOTION_EVENT_BUTTON_PRIMARY (action button)
        "00 00 00 01"  # AMOTION_EVENT_BUTTON_PRIMARY (buttons)
    )
    assert len(msg) == 32


def test_finger_touch_as_the_backend_sends_it() -> None:
    # pointer 3 lifting at (36, 576) of a 360x640 video: pressure 0, no buttons
    assert encode_inject_touch(M.UP, 3, 36, 576, 360, 640, 0.0) == bytes(
        [0x02, 0x01, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 36, 0, 0, 2, 64, 1, 104, 2, 128, 0, 0]
        + [0] * 8
    )
    assert encode_inject_touch(M.MOVE, 0, 0, 0, 1, 1, 0.5)[1] == 2


def test_reset_video_is_one_byte_17() -> None:
    assert encode_reset_video() == b"\x11"


def test_pressure_fixed_point() -> None:
    assert to_fixed_point_16(0.0) == 0
    assert to_fixed_point_16(0.5) == 0x8000
    assert to_fixed_point_16(1.0) == 0xFFFF
    with pytest.raises(ValueError):
        to_fixed_point_16(1.5)


@given(st.floats(0, 1), st.floats(0, 1), st.integers(1, 4096), st.integers(1, 4096))
def test_video_point_is_always_inside_the_picture(x: float, y: float, w: int, h: int) -> None:
    px, py = to_video_point(x, y, w, h)
    assert 0 <= px < w and 0 <= py < h
    assert abs(px - x * w) <= 1 and abs(py - y * h) <= 1


def test_packet_header_flags() -> None:
    # demuxer.c: bit 63 config, bit 62 key frame, the rest PTS; then u32 size
    config = parse_packet_header(bytes([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x1B]))
    assert config == PacketHeader(config=True, keyframe=False, pts_us=0, size=27)
    key = parse_packet_header(bytes([0x40, 0, 0, 0, 0, 0x0F, 0x42, 0x40, 0, 1, 0, 0]))
    assert key == PacketHeader(config=False, keyframe=True, pts_us=1_000_000, size=65536)
    plain = parse_packet_header(bytes([0, 0, 0, 0, 0, 0, 0, 0x21, 0, 0, 0, 5]))
    assert plain == PacketHeader(config=False, keyframe=False, pts_us=33, size=5)
    with pytest.raises(ProtocolError):
        parse_packet_header(bytes(12))  # a zero-length packet never comes


@given(st.integers(0, (1 << 62) - 1), st.integers(1, (1 << 32) - 1), st.booleans())
def test_packet_header_round_trip(pts: int, size: int, key: bool) -> None:
    raw = encode_packet_header(pts, size, config=False, keyframe=key)
    assert len(raw) == 12
    assert parse_packet_header(raw) == PacketHeader(False, key, pts, size)


def test_device_and_codec_meta() -> None:
    assert parse_device_meta(b"Pixel 7".ljust(64, b"\0")) == "Pixel 7"
    with pytest.raises(ProtocolError):
        parse_device_meta(b"short")
    assert parse_codec_id(b"h264") == 0x68323634
    bad_ids = ((b"\0\0\0\0", "disabled"), (b"\0\0\0\1", "configuration"), (b"h265", "H.264"))
    for bad, why in bad_ids:
        with pytest.raises(ProtocolError, match=why):
            parse_codec_id(bad)
    assert parse_video_size(bytes([0, 0, 2, 0x40, 0, 0, 5, 0])) == (576, 1280)
    with pytest.raises(ProtocolError):
        parse_video_size(bytes(8))


def test_audio_codec_id_or_disabled_code() -> None:
    # Streamer.writeAudioHeader: AudioCodec.OPUS's id 0x6f707573 ("opus");
    # Streamer.writeDisableStream: 0 (cannot capture: video only), 1 (error).
    assert parse_audio_codec_id(bytes([0x6F, 0x70, 0x75, 0x73])) is AudioStream.OPUS
    assert parse_audio_codec_id(bytes([0, 0, 0, 0])) is AudioStream.DISABLED
    assert parse_audio_codec_id(bytes([0, 0, 0, 1])) is AudioStream.ERROR
    with pytest.raises(ProtocolError, match="Opus"):
        parse_audio_codec_id(bytes([0x00, 0x61, 0x61, 0x63]))  # AAC: never asked for


def _encode(width: int, height: int, frames: int, profile: str = "Baseline") -> list[bytes]:
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.profile = profile
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "keyint=4"}
    out = []
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(
            np.full((height * 3 // 2, width), i * 20 % 256, np.uint8), format="yuv420p"
        )
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    return out


@pytest.mark.parametrize(
    ("width", "height", "profile"),
    [(360, 640, "Baseline"), (1080, 2400, "Baseline"), (576, 1280, "High"), (1912, 1080, "Main")],
)
def test_sps_gives_the_cropped_picture_size(width: int, height: int, profile: str) -> None:
    first = _encode(width, height, 1, profile)[0]
    assert config_picture_size(first) == (width, height)


def _split_like_mediacodec(access_unit: bytes) -> tuple[bytes, bytes]:
    config = media = b""
    for nal in iter_nals(access_unit):
        kind = nal[0] & 0x1F
        if kind in (7, 8):
            config += b"\0\0\0\1" + nal
        elif kind in (1, 5):
            media += b"\0\0\0\1" + nal
    return config, media


def test_merger_prepends_config_once_then_to_later_keyframes() -> None:
    units = _encode(64, 64, 6)  # keyint=4: IDR at 0 and 4
    split = [_split_like_mediacodec(u) for u in units]
    config = split[0][0]
    assert has_sps(config) and not has_sps(split[4][1])
    merger = PacketMerger()
    assert merger.feed(PacketHeader(True, False, 0, len(config)), config) is None
    out = []
    for i, (_, media) in enumerate(split):
        key = i % 4 == 0
        packet = merger.feed(PacketHeader(False, key, 1000 * i, len(media)), media)
        assert packet is not None
        out.append(packet)
    assert out[0].data == config + split[0][1]  # scrcpy's merge
    assert out[1].data == split[1][1]
    assert out[4].data == config + split[4][1]  # parameter sets for late joiners
    assert [p.keyframe for p in out] == [True, False, False, False, True, False]
    assert [p.pts_us for p in out] == [0, 1000, 2000, 3000, 4000, 5000]
    # a keyframe that already carries SPS is left alone
    both = config + split[4][1]
    again = merger.feed(PacketHeader(False, True, 9, len(both)), both)
    assert again is not None and again.data == both
    # and the stream decodes
    codec = av.CodecContext.create("h264", "r")
    assert len([f for p in out for f in codec.decode(av.Packet(p.data))]) >= 5


def test_server_command_line() -> None:
    args = server_command(ServerOptions(scid=0x1234ABC, max_size=1280, max_fps=60))
    assert args[:6] == [
        "CLASSPATH=/data/local/tmp/scrcpy-server.jar",
        "app_process",
        "/",
        "com.genymobile.scrcpy.Server",
        "3.3.4",
        "scid=01234abc",
    ]
    assert {"tunnel_forward=true", "audio=false", "control=true", "max_size=1280"} <= set(args)
    assert not any(a.startswith("audio_") for a in args)
    sound = server_command(ServerOptions(scid=1, audio=True, audio_bit_rate=96_000))
    assert {"audio=true", "audio_codec=opus", "audio_bit_rate=96000"} <= set(sound)
    assert "video_codec_options=profile=1,i-frame-interval=2" in args
    assert ServerOptions(scid=5).socket_name == "scrcpy_00000005"
    with pytest.raises(ValueError):
        server_command(ServerOptions(scid=1 << 31))
    with pytest.raises(ValueError):
        server_command(ServerOptions(scid=1, extra_codec_options="a=1;reboot"))


def test_keys() -> None:
    assert android_keycode("Escape") == (4, 0)  # BACK
    assert android_keycode("Enter") == (66, 0)
    assert android_keycode("a") == (29, 0)
    assert android_keycode("Z") == (54, 0x41)
    assert android_keycode("7") == (14, 0)
    assert android_keycode("F12") == (142, 0)
    assert android_keycode("ArrowLeft") == (21, 0)
    assert android_keycode("é") is None
    assert android_keycode("Meta") is None
