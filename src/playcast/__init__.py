"""Playcast: play Android games in a browser, streamed over WebRTC from real devices."""

__version__ = "0.1.0"
