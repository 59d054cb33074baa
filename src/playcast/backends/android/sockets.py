"""The scrcpy server's sockets: connecting them in the server's order and
reading their headers (``ScrcpyLink``, one running server), and closing them.

DesktopConnection accepts video, then audio (when asked), then control; the
video socket starts with the device name and the codec header, the audio
socket with its codec id, or with the code that says the phone sends none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from playcast.backends.android.settings import AndroidSettings
from playcast.backends.audio import AudioStatus
from playcast.backends.base import BackendError
from playcast.backends.scrcpy import (
    DEVICE_NAME_FIELD_LENGTH,
    AudioStream,
    ProtocolError,
    parse_audio_codec_id,
    parse_codec_id,
    parse_device_meta,
    parse_video_size,
)

log = logging.getLogger("playcast.android")

_AUDIO_ERROR: Final = "audio configuration error"


class AudioConfigError(BackendError):
    """The device answered the audio socket with the configuration-error code."""


@dataclass(eq=False)
class ScrcpyLink:
    """One running scrcpy server and its sockets (video, audio when asked, control)."""

    proc: asyncio.subprocess.Process
    video: asyncio.StreamReader
    video_writer: asyncio.StreamWriter
    control_reader: asyncio.StreamReader
    control: asyncio.StreamWriter
    device_name: str
    output: deque[str]
    size: tuple[int, int]  # the video's, as the codec header gave it
    audio: asyncio.StreamReader | None = None
    audio_writer: asyncio.StreamWriter | None = None
    audio_status: AudioStatus = field(default_factory=lambda: AudioStatus(None, "not asked for"))
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    failed: bool = False
    last_packet: float = field(default_factory=time.monotonic)
    keyframe_asked_at: float | None = None
    # Set by every video packet, and by a keyframe that follows a config
    # packet (a new encoder session: the answer to RESET_VIDEO).
    video_seen: asyncio.Event = field(default_factory=asyncio.Event)
    fresh_session: asyncio.Event = field(default_factory=asyncio.Event)
    probes: int = 0
    rung: int = 0  # which of the ladder's encodings it was started with

    def close_sockets(self) -> None:
        for writer in (self.video_writer, self.audio_writer, self.control):
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()


def tail(output: deque[str], lines: int) -> str:
    """The server's last log lines, for an error message."""
    return " | ".join(list(output)[-lines:])


async def open_link(
    port: int,
    proc: asyncio.subprocess.Process,
    output: deque[str],
    settings: AndroidSettings,
    audio: bool,
) -> ScrcpyLink:
    """Connect every socket through the tunnel on ``port`` and read their headers."""
    s = settings

    async def first_socket() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # adb accepts the connection even before the server listens, then
        # closes it; the server's dummy byte tells that it really is there.
        while True:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    await reader.readexactly(1)
                    return reader, writer
                except BaseException:
                    writer.close()
                    raise
            await asyncio.sleep(s.retry_delay)

    connecting = asyncio.create_task(first_socket())
    exited = asyncio.create_task(proc.wait())
    try:
        done, _ = await asyncio.wait(
            {connecting, exited},
            timeout=s.connect_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        exited.cancel()
        connecting.cancel()
    if connecting not in done or connecting.cancelled():
        if exited in done:
            raise BackendError(f"scrcpy server exited ({proc.returncode}): {tail(output, 5)}")
        raise BackendError(f"scrcpy server did not accept within {s.connect_timeout:g}s")
    video, video_writer = connecting.result()
    audio_reader: asyncio.StreamReader | None = None
    audio_writer: asyncio.StreamWriter | None = None
    audio_status = AudioStatus(None, "turned off")
    try:
        async with asyncio.timeout(s.connect_timeout):
            if audio:
                audio_reader, audio_writer = await asyncio.open_connection("127.0.0.1", port)
            control_reader, control = await asyncio.open_connection("127.0.0.1", port)
            sock = control.get_extra_info("socket")
            if sock is not None:
                # Touches are tiny writes; Nagle would hold them back.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            name = parse_device_meta(await video.readexactly(DEVICE_NAME_FIELD_LENGTH))
            parse_codec_id(await video.readexactly(4))
            size = parse_video_size(await video.readexactly(8))
            if audio_reader is not None:
                stream = parse_audio_codec_id(await audio_reader.readexactly(4))
                audio_status = _audio_status(stream)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ProtocolError) as exc:
        for writer in (video_writer, audio_writer):
            if writer is not None:
                writer.close()
        raise BackendError(f"scrcpy handshake failed: {exc!r} {tail(output, 5)}") from None
    if audio_status.detail == _AUDIO_ERROR:
        video_writer.close()
        if audio_writer is not None:
            audio_writer.close()
        raise AudioConfigError("the device reported an audio configuration error")
    if audio_reader is not None and audio_status.codec is None:
        log.warning("%s: %s; video only", name, audio_status.detail)
    return ScrcpyLink(
        proc,
        video,
        video_writer,
        control_reader,
        control,
        name,
        output,
        size,
        audio=audio_reader,
        audio_writer=audio_writer,
        audio_status=audio_status,
    )


def _audio_status(stream: AudioStream) -> AudioStatus:
    if stream is AudioStream.OPUS:
        return AudioStatus("opus", "from the phone")
    if stream is AudioStream.DISABLED:
        return AudioStatus(
            None, "the phone sends no sound (Android 10 or older, or audio capture refused)"
        )
    return AudioStatus(None, _AUDIO_ERROR)


async def drain_control(link: ScrcpyLink, fail: Callable[[str], None]) -> None:
    """Device messages (clipboard, UHID output) are not used, but must be read."""
    try:
        while await link.control_reader.read(4096):
            pass
        fail("the device closed the control socket")
    except OSError as exc:
        fail(f"control socket: {exc}")


async def watch_server(link: ScrcpyLink, fail: Callable[[str], None]) -> None:
    code = await link.proc.wait()
    fail(f"scrcpy server exited ({code}) {tail(link.output, 3)}".rstrip())
