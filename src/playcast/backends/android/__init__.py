"""The Android backend: a phone or emulator, driven with adb and scrcpy 3.3.x.

adb pushes the scrcpy server, opens a forward tunnel and starts the server;
the server's H.264 and Opus go to the worker as they come (no decoding, no
re-encoding), and touches and keys go back as scrcpy control messages.

Sound needs Android 11 or later: an older phone (or one that refuses the
capture) answers on the audio socket with the disabled-stream code, and the
session is video only, as the log and ``audio_status`` say.

A still screen is not a dead phone: about a second after the picture stops
changing, a phone sends no video at all. So silence alone never fails the
link; after ``quiet_probe`` seconds of it the backend sends RESET_VIDEO, which
a live server answers with a new encoder session (config packet, keyframe),
and only a probe unanswered for ``probe_timeout`` is a dead device. The other
failures (adb transport or device gone, server exited, a socket closed) end
``packets()`` with BackendError; ``reset()`` then rebuilds the connection from
scratch, raising BackendError for as long as the device is unusable, so the
worker can retry it with backoff and register only once it works.

The package, top down: ``cli`` (flags, ``create_backend``), ``backend``
(``AndroidBackend``, which ties the rest together), ``media`` (the pumps
and feeds) and ``input`` (touches and keys), ``sockets`` (the scrcpy
server's sockets), ``device`` (the set-up through adb), ``settings``. The
wire encoding is ``playcast.backends.scrcpy``.
"""

from playcast.backends.android.backend import AndroidBackend
from playcast.backends.android.cli import add_arguments, create_backend, from_args
from playcast.backends.android.settings import AndroidSettings

__all__ = ["AndroidBackend", "AndroidSettings", "add_arguments", "create_backend", "from_args"]
