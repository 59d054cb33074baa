"""The costly synthetic scene (issue 24): as dear to encode as a real game, drawn
from a seed, never white but where a touch lands, and chosen by a worker flag."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from playcast.backends.arena import SCENE_MAX_LUMA, Mark
from playcast.backends.costly import CostlyScene
from playcast.backends.h264 import EncoderSettings, H264Encoder
from playcast.backends.synthetic import SyntheticBackend, add_arguments, create_backend
from playcast.backends.vp8 import DEFAULT_BITRATE, Vp8Encoder

W, H, FPS = 720, 1280, 30
SECONDS = 3


def bit_rate(encoder: H264Encoder | Vp8Encoder, scene: CostlyScene) -> float:
    """Mean bit/s of ``SECONDS`` of the scene after its first keyframe."""
    sizes = [
        len(encoder.encode(scene.render(i / FPS, (), False), i * 3000, i == 0).data)
        for i in range(SECONDS * FPS + 1)
    ]
    return 8 * sum(sizes[1:]) / SECONDS


@pytest.fixture(scope="module")
def scene() -> CostlyScene:
    return CostlyScene(W, H, seed=1)


def test_h264_needs_what_a_real_game_does(scene: CostlyScene) -> None:
    # The issue asks for about 3-4 Mbit/s at the encoder's usual quality (crf 26).
    rate = bit_rate(H264Encoder(EncoderSettings(W, H, FPS)), scene)
    assert 3.0e6 <= rate <= 4.0e6, rate


def test_vp8_runs_at_its_target_rate(scene: CostlyScene) -> None:
    # libvpx is rate-controlled: a costly scene keeps it at its target.
    rate = bit_rate(Vp8Encoder(EncoderSettings(W, H, FPS)), scene)
    assert rate >= 0.8 * DEFAULT_BITRATE, rate


def test_the_same_seed_draws_the_same_pictures_and_they_move(scene: CostlyScene) -> None:
    again = CostlyScene(W, H, seed=1)
    other = CostlyScene(W, H, seed=2)
    for t in (0.0, 1.3, 17.9):
        assert np.array_equal(scene.render(t, (), False), again.render(t, (), False))
        assert not np.array_equal(scene.render(t, (), False), other.render(t, (), False))
    a, b = scene.render(1.0, (), False), scene.render(1.0 + 1 / FPS, (), False)
    assert (a[:H] != b[:H]).mean() > 0.2, "most of the picture changes from frame to frame"


def test_only_a_touch_is_white(scene: CostlyScene) -> None:
    for t in np.linspace(0, 40, 50):
        assert int(scene.render(float(t), (), True)[:H].max()) <= SCENE_MAX_LUMA
    x, y = 0.31, 0.52  # on the river band, the busiest texture
    picture = scene.render(2.0, (Mark(x, y, until=3.0),), False)
    assert picture[round(y * (H - 1)), round(x * (W - 1))] == 235


def test_the_worker_flag_picks_the_scene() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--game", default="g")
    add_arguments(parser)
    backend = create_backend(parser.parse_args(["--synthetic-scene", "costly"]))
    assert isinstance(backend, SyntheticBackend)
    assert isinstance(backend._scene, CostlyScene)
    default = create_backend(parser.parse_args([]))
    assert isinstance(default, SyntheticBackend) and not isinstance(default._scene, CostlyScene)
    with pytest.raises(SystemExit):
        parser.parse_args(["--synthetic-scene", "sunset"])
