"""A worker's name (issue 26): --name, else the phone's serial for the
Android backend, else this host and process; a bad --name stops the worker
with a clear message before it registers anything."""

from __future__ import annotations

import argparse
import os
import socket

import pytest

from playcast.protocol import Register, decode, encode
from playcast.worker.main import add_arguments, settings_from_args


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_the_name_given_is_the_name_registered() -> None:
    settings = settings_from_args(args("--name", "bench-3"))
    assert settings.link.name == "bench-3"
    sent = Register(game="g", name=settings.link.name)
    assert decode(encode(sent)) == sent and b'"name":"bench-3"' in encode(sent)


def test_by_default_a_phone_s_serial_or_this_host_and_process() -> None:
    android = settings_from_args(args("--backend", "android", "--serial", "192.168.1.5:5555"))
    assert android.link.name == "192.168.1.5:5555"
    synthetic = settings_from_args(args())
    host = socket.gethostname()[:50]
    assert synthetic.link.name is not None and synthetic.link.name.endswith(f"-{os.getpid()}")
    assert synthetic.link.name.startswith(host.replace(" ", "-")[:10])


def test_the_name_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAYCAST_WORKER_NAME", "rack-2")
    assert settings_from_args(args("--backend", "android", "--serial", "S")).link.name == "rack-2"
    assert settings_from_args(args("--name", "x")).link.name == "x"


def test_a_bad_name_stops_the_worker_with_a_clear_message() -> None:
    with pytest.raises(SystemExit, match="letters, digits"):
        settings_from_args(args("--name", "my phone"))
    with pytest.raises(SystemExit, match="at most 64"):
        settings_from_args(args("--name", "x" * 65))
