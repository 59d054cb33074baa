"""One player's media session: an aiortc peer connection, video (and sound)
out, input in, torn down when the session ends.

It talks to nobody but the link core (``worker/link.py``): what happens to
the media is posted as an event (offer ready, connected, failed), and the
core decides what the server hears. ``worker/runner.py`` creates and closes
it when the core says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, Final

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from playcast import protocol as t
from playcast.backends.audio import game_audio
from playcast.backends.base import BackendError, GameBackend
from playcast.inputs import BadInput, Key, Picture, Touch, decode_message
from playcast.worker import link_events as lk
from playcast.worker.adaptation import Adaptation
from playcast.worker.codecs import NegotiationFailed, apply_answer, session_codec
from playcast.worker.input_queue import DEFAULT_LIMIT, InputOverflow, InputQueue
from playcast.worker.media import (
    BackendAudioTrack,
    BackendVideoTrack,
    add_audio_sender,
    add_video_sender,
)
from playcast.worker.media_counters import MediaCounters
from playcast.worker.rate_control import RateSettings

log = logging.getLogger("playcast.worker")

# Bound on closing one peer connection; past it the ack says ok=false.
CLOSE_TIMEOUT: Final = 10.0

Post = Callable[[lk.Event], None]


class Session:
    """One player's peer connection: video out, input in, then torn down.

    It talks to nobody but the link core: what happens to the media is posted
    as an event (offer ready, connected, failed), and the core decides what
    the server hears.
    """

    def __init__(
        self,
        start: t.SessionStart,
        backend: GameBackend,
        post: Post,
        playout_delay_ms: int | None = None,
        input_limit: int = DEFAULT_LIMIT,
        audio: bool = True,
        rate: RateSettings | None = None,
        counters: MediaCounters | None = None,
    ) -> None:
        self.id = start.session_id
        self.client_id = start.client_id
        self._playout_delay_ms = playout_delay_ms
        self._backend = backend
        self._post = post
        config = RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                for s in start.ice_servers
            ]
        )
        self.pc = RTCPeerConnection(config)
        # Checked when the offer is made: a codec we cannot send fails it.
        self.codec = session_codec(start.codec)
        self.track = BackendVideoTrack(backend, on_failure=self._backend_failed, codec=self.codec)
        sound = game_audio(backend) if audio else None
        self.audio_track: BackendAudioTrack | None = None
        if sound is not None and sound.audio_status.codec is not None:
            self.audio_track = BackendAudioTrack(sound)
        self.connected = False  # our peer connection reached "connected"
        self._closing = False
        self._handshake: asyncio.Queue[t.Answer | t.IceCandidate] = asyncio.Queue()
        self.inputs = InputQueue(input_limit)
        self._tasks: list[asyncio.Task[None]] = []
        self.inputs_ok = 0
        self.inputs_bad = 0
        self.counters = counters if counters is not None else MediaCounters()
        self.adaptation = Adaptation(backend, rate or RateSettings(), self.counters, self.id)

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run_handshake(), name=f"handshake-{self.id}"))
        self._tasks.append(asyncio.create_task(self._run_inputs(), name=f"inputs-{self.id}"))

    def feed(self, msg: t.Answer | t.IceCandidate) -> None:
        self._handshake.put_nowait(msg)

    def _failed(self, reason: str, *, backend: bool, kind: t.FailureKind | None = None) -> None:
        if not self._closing:
            self._post(lk.MediaFailed(self.id, reason, backend, kind))

    async def _run_handshake(self) -> None:
        try:
            await self._offer()
            remote_set = False
            early: list[t.Candidate | None] = []
            while True:
                msg = await self._handshake.get()
                if isinstance(msg, t.Answer):
                    if remote_set:
                        log.warning("session %s: second answer ignored", self.id)
                        continue
                    await apply_answer(self.pc, msg.sdp, self.codec)
                    remote_set = True
                    for c in early:
                        await self._add_candidate(c)
                elif remote_set:
                    await self._add_candidate(msg.candidate)
                else:
                    early.append(msg.candidate)  # trickled ahead of the answer
        except asyncio.CancelledError:
            raise
        except NegotiationFailed as exc:
            log.warning("session %s: negotiation failed: %s", self.id, exc)
            self._failed(str(exc), backend=False, kind="negotiation")
        except Exception as exc:
            log.warning("session %s: handshake failed: %r", self.id, exc)
            self._failed(f"handshake failed: {exc!r}", backend=False, kind="internal")

    async def _offer(self) -> None:
        add_video_sender(
            self.pc, self.track, self._backend, self._playout_delay_ms, self.adaptation
        )
        if self.audio_track is not None:
            add_audio_sender(self.pc, self.audio_track)
        channel = self.pc.createDataChannel("input", ordered=True)
        channel.on("message", self._on_input)
        channel.on("close", self._on_channel_close)

        def tell(message: dict[str, Any]) -> None:
            if channel.readyState == "open":
                channel.send(json.dumps(message))

        def on_open() -> None:
            self.adaptation.tell = tell
            self.adaptation.say()

        channel.on("open", on_open)
        self.pc.on("connectionstatechange", self._on_state)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self._post(lk.OfferReady(self.id, self.pc.localDescription.sdp))

    async def _add_candidate(self, candidate: t.Candidate | None) -> None:
        if candidate is None or not candidate.candidate:
            await self.pc.addIceCandidate(None)
            return
        ice = candidate_from_sdp(candidate.candidate.removeprefix("candidate:"))
        ice.sdpMid = candidate.sdp_mid
        ice.sdpMLineIndex = candidate.sdp_mline_index
        await self.pc.addIceCandidate(ice)

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("session %s: peer connection %s", self.id, state)
        if self._closing:
            return
        if state == "connected" and not self.connected:
            self.connected = True
            self._post(lk.MediaConnected(self.id))
        elif state in ("failed", "closed"):
            if self.connected:
                self._failed(f"the player's peer connection {state}", backend=False)
            else:
                self._failed(f"peer connection {state} (ICE/DTLS)", backend=False, kind="ice")

    def _on_channel_close(self) -> None:
        if self.connected:
            self._failed("the player's input channel closed", backend=False)

    def _backend_failed(self, reason: str) -> None:
        self._failed(reason, backend=True, kind="media")

    def _on_input(self, data: str | bytes) -> None:
        try:
            event = decode_message(data)
        except BadInput as exc:
            self.inputs_bad += 1
            log.warning("session %s: malformed input dropped: %s", self.id, exc)
            return
        if isinstance(event, Picture):
            self._on_picture(event)
            return
        try:
            self.inputs.put(event)
        except InputOverflow as exc:
            # Dropping a down or an up would leave a finger stuck: end instead.
            self._failed(f"input overflow: {exc}", backend=False)

    def _on_picture(self, report: Picture) -> None:
        """The page's own word on its picture: a stall is logged and counted,
        and answered with a keyframe (through the gate) in case one would help."""
        if report.state == "frozen":
            self.counters.picture_stalls += 1
            log.warning("session %s: the player's picture stopped (no frame for 2 s)", self.id)
            self.adaptation.keyframe_requested()
        else:
            log.info(
                "session %s: the player's picture moves again after %d ms", self.id, report.still_ms
            )

    async def _run_inputs(self) -> None:
        while True:
            event = await self.inputs.get()
            try:
                if isinstance(event, Touch):
                    await self._backend.inject_touch(event.action, event.id, event.x, event.y)
                elif isinstance(event, Key):
                    await self._backend.inject_key(event.action, event.key)
            except BackendError as exc:
                self._backend_failed(f"input failed: {exc}")
                return
            except Exception:
                # One bad event must not end the player's input for good.
                log.exception("session %s: input %r failed, dropped", self.id, event)
                continue
            self.inputs_ok += 1

    async def close(self) -> tuple[bool, str]:
        """Tear everything down; ``(ok, detail)`` is the honest outcome."""
        self._closing = True
        await self.adaptation.close()
        for task in self._tasks:
            task.cancel()
        ok, notes = True, []
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:
                # The tasks catch what they expect; anything here is a bug.
                log.exception("session %s: task %s failed", self.id, task.get_name())
                notes.append(f"{task.get_name()} failed: {exc!r}")
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.pc.close()
        except Exception as exc:
            log.exception("session %s: closing the peer connection failed", self.id)
            ok = False
            notes.append(f"closing the peer connection failed: {exc!r}")
        await self.track.aclose()
        if self.audio_track is not None:
            await self.audio_track.aclose()
        detail = f"session {self.id} closed ({self.inputs_ok} inputs, {self.inputs_bad} malformed"
        if self.inputs.coalesced:
            detail += f", {self.inputs.coalesced} moves coalesced"
        return ok, "; ".join([detail + ")", *notes])
