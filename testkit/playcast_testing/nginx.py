"""Debian's nginx in front of real servers, with the configs Playcast ships.

The shipped files (``deploy/nginx-playcast.conf``, ``deploy/nginx-playcast-
cluster.conf``) are what is tested. ``render`` changes only what a test
machine cannot have, and fails if a change does not apply (the shipped file
changed shape: the harness must follow, not silently test something else):

- ``listen 443 ssl http2;`` becomes ``listen 127.0.0.1:PORT;`` on a free port,
  and the ``ssl_certificate``/``ssl_certificate_key`` lines go (no
  certificate here; TLS is nginx's, not Playcast's);
- each node address ``127.0.0.1:NNNN`` becomes the next test server's port,
  in order of first appearance (8080; or 8081, 8082, 8083);
- with ``monitor``, ``allow 10.0.0.0/8;`` (the sample's private monitoring
  network) becomes ``allow MONITOR;``, an address of 127/8 a test connects
  from to stand in for Prometheus.

The result is included in a minimal main configuration, as Debian's own
``nginx.conf`` includes ``sites-enabled``: the shipped file's ``map``,
``upstream`` and ``server`` blocks sit in its ``http`` block.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from playcast_testing.redis_server import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SINGLE = DEPLOY / "nginx-playcast.conf"
CLUSTER = DEPLOY / "nginx-playcast-cluster.conf"
HOST = "127.0.0.1"

_MAIN = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/site.conf;
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if found is None:
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx; make test does)")
    return found


def render(text: str, port: int, nodes: Sequence[int], monitor: str | None = None) -> str:
    """The shipped config ``text``, as a test runs it (the module's docstring)."""
    shipped = list(dict.fromkeys(re.findall(r"\b127\.0\.0\.1:(\d+)\b", text)))
    if len(shipped) != len(nodes):
        raise ValueError(f"the config names nodes {shipped}; the test gives {len(nodes)}")
    ports = dict(zip(shipped, nodes, strict=True))
    text = re.sub(r"\b127\.0\.0\.1:(\d+)\b", lambda m: f"{HOST}:{ports[m.group(1)]}", text)
    text, n = re.subn(r"listen\s+443\s+ssl[^;]*;", f"listen {HOST}:{port};", text)
    if n != 1:
        raise ValueError(f"expected one 'listen 443 ssl' line, found {n}")
    text, n = re.subn(r"(?m)^\s*ssl_certificate(_key)?\s[^;]*;\n", "", text)
    if n != 2:
        raise ValueError(f"expected the two ssl_certificate lines, found {n}")
    if monitor is not None:
        text, n = re.subn(r"allow 10\.0\.0\.0/8;", f"allow {monitor};", text)
        if n == 0:
            raise ValueError("no 'allow 10.0.0.0/8;' to stand a monitor in for")
    return text


class Nginx:
    """A running nginx: its port and its error log."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, workdir: Path) -> None:
        self.proc, self.port, self.dir = proc, port, workdir

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def ws_url(self, role: str) -> str:
        return f"ws://{HOST}:{self.port}/ws/{role}"

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def config(self) -> str:
        return (self.dir / "site.conf").read_text()


@contextlib.asynccontextmanager
async def running_nginx(
    config: Path, nodes: Sequence[int], *, monitor: str | None = None
) -> AsyncIterator[Nginx]:
    """nginx with the shipped ``config`` in front of the servers on ``nodes``."""
    binary = nginx_binary()
    workdir, port = _prepare(config, nodes, monitor)
    main = workdir / "nginx.conf"
    argv = [binary, "-p", str(workdir), "-c", str(main), "-e", str(workdir / "error.log")]
    check = await asyncio.create_subprocess_exec(
        *argv, "-t", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await check.communicate()
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t refused {config.name}:\n{out.decode(errors='replace')}")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        "-g",
        "daemon off;",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await _listening(proc, port)
        yield Nginx(proc, port, workdir)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _prepare(config: Path, nodes: Sequence[int], monitor: str | None) -> tuple[Path, int]:
    """A work directory with the rendered config and its main file; the port."""
    workdir = Path(tempfile.mkdtemp(prefix="playcast-nginx-"))
    workdir.chmod(0o755)  # its workers drop root for "nobody"
    port = free_port()
    (workdir / "site.conf").write_text(render(config.read_text(), port, nodes, monitor))
    (workdir / "nginx.conf").write_text(_MAIN.format(dir=workdir))
    return workdir, port


async def _listening(proc: asyncio.subprocess.Process, port: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
            writer.close()
            return
        except OSError:
            if proc.returncode is not None:
                raise RuntimeError(f"nginx exited with {proc.returncode}") from None
            if loop.time() > deadline:
                raise RuntimeError("nginx did not start listening") from None
            await asyncio.sleep(0.02)  # a port has no notification to wait on
