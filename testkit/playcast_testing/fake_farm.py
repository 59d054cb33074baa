"""Several phones behind one fake adb server: what a farm host's adb looks like.

``tests/fake_adb/adb`` relays each command line to ``PLAYCAST_FAKE_ADB_DEVICE``
as JSON; pointed at a ``FakeAdbServer`` (instead of one ``FakeDevice``) it
reaches this, which answers as adb's server does:

- host commands: ``devices [-l]``, ``track-devices [-l]`` (the real stream:
  four hex digits of length, then the whole list, sent again on every
  change), ``start-server``, ``kill-server``;
- ``-s SERIAL …`` (or no ``-s`` with exactly one phone): refused with adb's
  own words for a phone that is not listed, unauthorized, offline or in
  recovery; otherwise the phone's health and screen commands are answered
  here (``dumpsys battery`` in Android's format, ``dumpsys power``,
  ``dumpsys window policy``, ``df /data``, ``settings``, ``svc power
  stayon``, ``input keyevent``, ``wm dismiss-keyguard``, ``echo``, and
  ``;``-separated scripts of them, as the device's sh runs them) and
  everything else is passed on, byte for byte, to that phone's
  ``FakeDevice`` (scrcpy, the game, ``pm path``).

The test plugs and unplugs phones (``unplug`` kills the phone's scrcpy
servers and every later command fails, as pulling the cable does), moves
them between adb states, restarts the adb server (every ``track-devices``
stream ends), and changes the battery, temperature, screen and the game.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Final

from playcast_testing.fake_device import WAKE_KEYS, FakeDevice, adb_env

UNAUTHORIZED: Final = (
    "adb: device unauthorized.\n"
    "This adb server's $ADB_VENDOR_KEYS is not set\n"
    "Try 'adb kill-server' if that seems wrong.\n"
    "Otherwise check for a confirmation dialog on your device.\n"
)
STAY_ON: Final = "stay_on_while_plugged_in"
# PowerManager / BatteryManager: what svc power stayon writes, per source.
STAYON_VALUES: Final = {"false": 0, "ac": 1, "usb": 2, "wireless": 4, "true": 7}
BATTERY_PLUGGED_USB: Final = 2


def _device_attribute(name: str) -> Any:
    """A ``FakePhone`` attribute that is its ``FakeDevice``'s."""
    return property(
        lambda phone: getattr(phone.device, name),
        lambda phone, value: setattr(phone.device, name, value),
    )


@dataclass(eq=False)
class FakePhone:
    """One phone as the host sees it: its adb state and what it would report."""

    device: FakeDevice
    transport_id: int
    state: str = "device"  # device, unauthorized, offline, recovery
    plugged: bool = True
    usb: str = "usb:1-1"
    product: str = "fakephone"
    model: str = "Playcast_FakePhone"
    battery_level: int = 80
    temperature_c: float = 30.0
    usb_powered: bool = True
    battery_health: int = 2  # BATTERY_HEALTH_GOOD
    data_free_kb: int = 20_000_000
    settings: dict[str, str] = field(default_factory=lambda: {STAY_ON: "0"})
    shell_commands: list[str] = field(default_factory=list)  # answered here

    @property
    def serial(self) -> str:
        return self.device.serial

    # The screen and its lock are the device's (the worker's backend wakes and
    # unlocks it through the device, the farm through this); keyguard_secure:
    # a PIN, which wm dismiss-keyguard cannot dismiss.
    screen_on = _device_attribute("screen_on")
    keyguard_showing = _device_attribute("keyguard_showing")
    keyguard_secure = _device_attribute("keyguard_secure")

    def row(self, long: bool) -> str:
        """adb's append_transport: ``"%-22s %s"``, the devpath, what the phone told
        (nothing until it is authorized), and the transport id last."""
        if not long:
            return f"{self.serial}\t{self.state}\n"
        row = f"{self.serial:<22} {self.state} {self.usb}"
        if self.state == "device":
            row += f" product:{self.product} model:{self.model} device:{self.product}"
        return row + f" transport_id:{self.transport_id}\n"

    # --- switches the test flips -------------------------------------------------

    def remove_game(self) -> None:
        self.device.installed.clear()

    def install_game(self, package: str) -> None:
        self.device.installed.add(package)

    def screen_timeout(self) -> None:
        """The screen-off timeout passed: off and locked unless kept awake on this power."""
        stay = int(self.settings.get(STAY_ON, "0") or 0)
        if not (self.usb_powered and stay & BATTERY_PLUGGED_USB):
            self.screen_on = False
            self.keyguard_showing = True

    # --- what the phone prints ---------------------------------------------------------

    def dumpsys_battery(self) -> str:
        full = self.battery_level >= 100
        status = (5 if full else 2) if self.usb_powered else 3
        return (
            "Current Battery Service state:\n"
            "  AC powered: false\n"
            f"  USB powered: {str(self.usb_powered).lower()}\n"
            "  Wireless powered: false\n"
            "  Dock powered: false\n"
            "  Max charging current: 500000\n"
            "  Max charging voltage: 5000000\n"
            "  Charge counter: 2869000\n"
            f"  status: {status}\n"
            f"  health: {self.battery_health}\n"
            "  present: true\n"
            f"  level: {self.battery_level}\n"
            "  scale: 100\n"
            "  voltage: 4231\n"
            f"  temperature: {round(self.temperature_c * 10)}\n"
            "  technology: Li-ion\n"
        )

    def dumpsys_power(self) -> str:
        awake = "Awake" if self.screen_on else "Asleep"
        return (
            "POWER MANAGER (dumpsys power)\n\n"
            "Power Manager State:\n"
            "  mDirty=0x0\n"
            f"  mWakefulness={awake}\n"
            "  mWakefulnessChanging=false\n"
            f"  mIsPowered={str(self.usb_powered).lower()}\n"
            f"  mPlugType={BATTERY_PLUGGED_USB if self.usb_powered else 0}\n"
            f"  mBatteryLevel={self.battery_level}\n"
            f"  mStayOn={str(self._stays_on()).lower()}\n"
            f"  mStayOnWhilePluggedInSetting={self.settings.get(STAY_ON, '0')}\n"
            "\nDisplay Power: state=" + ("ON" if self.screen_on else "OFF") + "\n"
        )

    def dumpsys_window_policy(self) -> str:
        showing = str(self.keyguard_showing).lower()
        return (
            "WINDOW MANAGER POLICY STATE (dumpsys window policy)\n"
            "    mSafeMode=false mSystemReady=true mSystemBooted=true\n"
            f"    mScreenOnEarly={str(self.screen_on).lower()}"
            f" mScreenOnFully={str(self.screen_on).lower()}\n"
            "    KeyguardServiceDelegate\n"
            f"      showing={showing}\n"
            "      inputRestricted=false\n"
            "      occluded=false\n"
            f"      secure={str(self.keyguard_secure).lower()}\n"
            "      dreaming=false\n"
            "      KeyguardStateMonitor\n"
            f"        mIsShowing={showing}\n"
        )

    def df_data(self) -> str:
        total = 112_000_000
        used = max(0, total - self.data_free_kb)
        percent = used * 100 // total
        return (
            "Filesystem       1K-blocks     Used Available Use% Mounted on\n"
            f"/dev/block/dm-5 {total:>10} {used:>8} {self.data_free_kb:>9} {percent:>3}% /data\n"
        )

    def _stays_on(self) -> bool:
        stay = int(self.settings.get(STAY_ON, "0") or 0)
        return bool(self.usb_powered and stay & BATTERY_PLUGGED_USB)

    def local_command(self, words: list[str]) -> tuple[int, str, str] | None:
        """One command this module answers for the phone: (status, out, err); None: not one."""
        match words:
            case ["echo", *rest]:
                return 0, " ".join(rest) + "\n", ""
            case ["dumpsys", "battery"]:
                return 0, self.dumpsys_battery(), ""
            case ["dumpsys", "power"]:
                return 0, self.dumpsys_power(), ""
            case ["dumpsys", "window", "policy"] | ["dumpsys", "window"]:
                return 0, self.dumpsys_window_policy(), ""
            case ["df", "/data"]:
                return 0, self.df_data(), ""
            case ["pm", "path", package]:
                if package in self.device.installed:
                    return 0, f"package:/data/app/~~fake/{package}-1/base.apk\n", ""
                return 1, "", ""
            case ["settings", "get", "global", key]:
                return 0, self.settings.get(key, "null") + "\n", ""
            case ["settings", "put", "global", key, value]:
                self.settings[key] = value
                return 0, "", ""
            case ["svc", "power", "stayon", how] if how in STAYON_VALUES:
                self.settings[STAY_ON] = str(STAYON_VALUES[how])
                return 0, "", ""
            case ["input", "keyevent", key]:
                if key in WAKE_KEYS:
                    self.device.wake()
                return 0, "", ""
            case ["wm", "dismiss-keyguard"]:
                self.device.dismiss_keyguard()
                return 0, "", ""
        return None


class FakeAdbServer:
    """adb's server with several fake phones; ``env()`` points the fake adb at it."""

    def __init__(self) -> None:
        self.phones: dict[str, FakePhone] = {}
        self.commands: list[list[str]] = []
        self.restarts = 0
        self._next_transport = 1
        self._server: asyncio.Server | None = None
        self._trackers: dict[asyncio.StreamWriter, bool] = {}  # writer -> long listing
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    async def start(self) -> FakeAdbServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._trackers):
            writer.close()
        for phone in self.phones.values():
            await phone.device.stop()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def __aenter__(self) -> FakeAdbServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    def env(self, log_path: str | os.PathLike[str] | None = None) -> dict[str, str]:
        return adb_env(self.endpoint, log_path)

    # --- the test's hands ----------------------------------------------------------

    async def add_phone(
        self, serial: str, *, state: str = "device", plugged: bool = True, **device: Any
    ) -> FakePhone:
        dev = await FakeDevice(serial=serial, **device).start()
        phone = FakePhone(dev, self._transport(), state=state, plugged=plugged)
        phone.usb = f"usb:1-1.{len(self.phones) + 1}"
        self.phones[serial] = phone
        self._sync(phone)
        return phone

    def plug(self, serial: str, state: str = "device") -> None:
        """Cable in: listed again, with a new transport id (as adb gives one)."""
        phone = self.phones[serial]
        phone.plugged, phone.state = True, state
        phone.transport_id = self._transport()
        self._sync(phone)

    def unplug(self, serial: str) -> None:
        """Cable out: off the list; its scrcpy servers and tunnels die at once."""
        phone = self.phones[serial]
        phone.plugged = False
        self._sync(phone)

    def set_state(self, serial: str, state: str) -> None:
        phone = self.phones[serial]
        phone.state = state
        self._sync(phone)

    def restart_adb(self) -> None:
        """``adb kill-server`` and a new server: every stream ends, every link drops."""
        self.restarts += 1
        for writer in list(self._trackers):
            _send(writer, exit=0)
            writer.close()
        self._trackers.clear()
        for phone in self.phones.values():
            phone.device.go_offline()
            phone.transport_id = self._transport()
            self._sync(phone)

    def listing(self, long: bool = True) -> str:
        plugged = sorted((p for p in self.phones.values() if p.plugged), key=lambda p: p.serial)
        return "".join(p.row(long) for p in plugged)

    def _transport(self) -> int:
        self._next_transport += 1
        return self._next_transport - 1

    def _sync(self, phone: FakePhone) -> None:
        """The device follows its adb state; every tracker hears the new list."""
        if phone.plugged and phone.state == "device":
            phone.device.go_online()
        else:
            phone.device.go_offline()
        for writer, long in list(self._trackers.items()):
            _send(writer, out=_frame(self.listing(long)))

    # --- adb -----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            line = await reader.readline()
            request = json.loads(line)
            argv = [str(a) for a in request["argv"]]
            self.commands.append(argv)
            code = await self._dispatch(argv, line, reader, writer)
            if code is not None:
                _send(writer, exit=code)
            await writer.drain()
        except (OSError, ValueError, KeyError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the top of a connection callback: end quietly
        finally:
            self._handlers.discard(task)
            self._trackers.pop(writer, None)
            writer.close()

    async def _dispatch(
        self,
        argv: list[str],
        line: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> int | None:
        serial = argv[1] if argv[:1] == ["-s"] and len(argv) > 1 else None
        args = argv[2:] if serial is not None else argv
        match args:
            case ["devices", *rest]:
                _send(writer, out="List of devices attached\n" + self.listing("-l" in rest) + "\n")
                return 0
            case ["track-devices", *rest]:
                long = "-l" in rest
                self._trackers[writer] = long
                _send(writer, out=_frame(self.listing(long)))
                await reader.read()  # until the client goes (or restart_adb ends it)
                return None
            case ["start-server"]:
                return 0
            case ["kill-server"]:
                self.restart_adb()
                return 0
        phone, error = self._target(serial, args)
        if phone is None:
            _send(writer, err=error)
            return 1
        if args[:1] == ["get-state"] and phone.state == "recovery":
            _send(writer, out="recovery\n")
            return 0
        if not (args[:2] == ["forward", "--remove"] or phone.state == "device"):
            _send(
                writer,
                err=UNAUTHORIZED if phone.state == "unauthorized" else "adb: device offline\n",
            )
            return 1
        if args[:1] == ["shell"] and len(args) > 1:
            code = self._shell(phone, " ".join(args[1:]), writer)
            if code is not None:
                return code
        if "app_process" in " ".join(args):
            await self._scrcpy(phone, args, line, reader, writer)
        else:
            await self._relay(phone, line, reader, writer)
        return None

    async def _scrcpy(
        self,
        phone: FakePhone,
        args: list[str],
        line: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """What the scrcpy server does to the phone: ``power_on`` (default true)
        turns the screen on; ``stay_awake=true`` keeps it on while plugged, and
        scrcpy's clean-up process puts the setting back when the server ends."""
        words = " ".join(args).split()
        if "power_on=false" not in words:
            phone.screen_on = True
        stay = "stay_awake=true" in words
        before = phone.settings.get(STAY_ON, "0")
        if stay:
            phone.settings[STAY_ON] = str(STAYON_VALUES["true"])
        try:
            await self._relay(phone, line, reader, writer)
        finally:
            if stay:
                phone.settings[STAY_ON] = before

    def _target(self, serial: str | None, args: list[str]) -> tuple[FakePhone | None, str]:
        if serial is not None:
            phone = self.phones.get(serial)
            if phone is None or (not phone.plugged and args[:2] != ["forward", "--remove"]):
                return None, f"adb: device '{serial}' not found\n"
            return phone, ""
        listed = [p for p in self.phones.values() if p.plugged]
        if len(listed) == 1:
            return listed[0], ""
        if not listed:
            return None, "adb: no devices/emulators found\n"
        return None, "adb: more than one device/emulator\n"

    def _shell(self, phone: FakePhone, script: str, writer: asyncio.StreamWriter) -> int | None:
        """A script of the commands answered here, run as sh would; None: relay it."""
        parts = [part.split() for part in script.split(";") if part.strip()]
        if len(parts) == 1 and phone.local_command(parts[0]) is None:
            return None
        phone.shell_commands.append(script)
        code = 0
        for words in parts:
            answer = phone.local_command(words)
            if answer is None:
                _send(writer, err=f"/system/bin/sh: {words[0]}: inaccessible or not found\n")
                code = 127
                continue
            code, out, err = answer
            if out:
                _send(writer, out=out)
            if err:
                _send(writer, err=err)
        return code

    async def _relay(
        self,
        phone: FakePhone,
        line: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """The command, to the phone's FakeDevice; its answer (and exit), back as it comes."""
        host, _, port = phone.device.endpoint.rpartition(":")
        dev_reader, dev_writer = await asyncio.open_connection(host, int(port))
        dev_writer.write(line)

        async def upstream() -> None:
            # The client going away is a hang-up the device must see (app_process).
            with contextlib.suppress(OSError):
                await reader.read()
            dev_writer.close()

        up = asyncio.create_task(upstream())
        try:
            while data := await dev_reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            up.cancel()
            dev_writer.close()


def _frame(listing: str) -> str:
    """One track-devices message: the list's byte length in four hex digits, then it."""
    return f"{len(listing.encode()):04x}{listing}"


def _send(writer: asyncio.StreamWriter, **msg: Any) -> None:
    with contextlib.suppress(Exception):
        writer.write(json.dumps(msg).encode() + b"\n")
