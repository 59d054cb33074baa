"""``playcast worker --backend android``: its flags, and the backend built from them."""

from __future__ import annotations

import argparse

from playcast.backends.android.backend import AndroidBackend
from playcast.backends.android.settings import AndroidSettings
from playcast.backends.scrcpy import SCRCPY_VERSION
from playcast.envflags import add_flag
from playcast.protocol import DEFAULT_GAME


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``playcast worker --backend android`` (each also a PLAYCAST_… variable)."""
    add_flag(parser, "--serial", help="adb serial of the phone or emulator (see adb devices)")
    add_flag(parser, "--scrcpy-server", help=f"the scrcpy-server-v{SCRCPY_VERSION} file to push")
    add_flag(parser, "--adb", default="adb", help="adb executable")
    add_flag(
        parser,
        "--scrcpy-version",
        default=SCRCPY_VERSION,
        help="version the server file reports (must match it exactly)",
    )
    add_flag(parser, "--android-max-size", type=int, default=1280, help="longest video side")
    add_flag(parser, "--android-bit-rate", type=int, default=4_000_000, help="video bit rate")
    add_flag(parser, "--android-max-fps", type=int, default=60, help="video frame rate cap")
    add_flag(
        parser, "--android-keyframe-interval", type=int, default=2, help="seconds between IDRs"
    )
    add_flag(
        parser, "--android-codec-options", default="", help="extra MediaCodec options (k=v,...)"
    )
    add_flag(
        parser,
        "--android-probe-timeout",
        type=float,
        default=5.0,
        help="seconds a RESET_VIDEO probe (sent after 1 s of video silence) may go unanswered",
    )
    add_flag(
        parser,
        "--android-audio-bit-rate",
        type=int,
        default=128_000,
        help="Opus bit rate of the game's sound",
    )
    add_flag(
        parser,
        "--android-ladder-down",
        type=float,
        default=1.0,
        help="seconds the link's estimate stays under the phone's rung before it steps down",
    )
    add_flag(
        parser,
        "--android-ladder-up",
        type=float,
        default=10.0,
        help="seconds of room over the phone's rung before the next one up is tried",
    )
    add_flag(
        parser,
        "--android-launch-timeout",
        type=float,
        default=60.0,
        help="seconds for the game to reach the foreground",
    )


def create_backend(args: argparse.Namespace) -> AndroidBackend:
    if not args.scrcpy_server:
        raise SystemExit("--backend android needs --scrcpy-server PATH (or PLAYCAST_SCRCPY_SERVER)")
    return AndroidBackend(
        AndroidSettings(
            scrcpy_server=args.scrcpy_server,
            serial=args.serial or None,
            adb=args.adb,
            game=getattr(args, "game", None) or DEFAULT_GAME,
            scrcpy_version=args.scrcpy_version,
            max_size=args.android_max_size,
            video_bit_rate=args.android_bit_rate,
            max_fps=args.android_max_fps,
            keyframe_interval=args.android_keyframe_interval,
            codec_options=args.android_codec_options,
            probe_timeout=args.android_probe_timeout,
            audio=not getattr(args, "no_audio", False),
            audio_bit_rate=args.android_audio_bit_rate,
            launch_timeout=args.android_launch_timeout,
            ladder_down=args.android_ladder_down,
            ladder_up=args.android_ladder_up,
        )
    )


from_args = create_backend
