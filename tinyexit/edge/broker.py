"""The MQTT broker: a private mosquitto on 127.0.0.1 when none is given, or a URL to a running one.

`PrivateBroker` writes a config (one listener on a free loopback port, anonymous, no persistence) into a
temp folder, starts Debian's `mosquitto` on it, waits until it accepts connections and stops it on exit
(terminate, then kill). `check_reachable` turns an unreachable `--broker` into one error line after a
timeout instead of a hang. `connect_client` makes the paho client every part of the edge uses.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

from tinyexit.errors import TinyexitError

DEFAULT_PORT = 1883
MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def parse_url(url: str) -> tuple[str, int]:
    """mqtt://host[:port] -> (host, port)."""
    parsed = urlparse(url)
    try:
        port = parsed.port or DEFAULT_PORT
    except ValueError:
        raise TinyexitError(f"--broker {url}: the port is not a number from 1 to 65535") from None
    if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname or parsed.path not in ("", "/"):
        raise TinyexitError(f"--broker {url}: give mqtt://HOST[:PORT]")
    return parsed.hostname, port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_reachable(url: str, timeout: float = 5.0) -> tuple[str, int]:
    """(host, port) of a broker that accepts TCP connections within `timeout` seconds, else one error line."""
    host, port = parse_url(url)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
                return host, port
        except OSError as err:
            last = err.strerror or type(err).__name__
        if time.monotonic() >= deadline:
            raise TinyexitError(f"MQTT broker {url} is unreachable ({last}) after {timeout:g} s")
        time.sleep(0.1)


def mosquitto_path() -> str:
    found = shutil.which("mosquitto") or next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)
    if not found:
        raise TinyexitError("mosquitto is not installed (run ./setup.sh, or give --broker mqtt://HOST:PORT)")
    return found


class PrivateBroker:
    """`with PrivateBroker() as b: b.url` — a mosquitto of our own; `restart()` keeps its port."""

    def __init__(self, port: int | None = None, start_timeout: float = 10.0):
        self.executable = mosquitto_path()
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="tinyexit-mosquitto-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "PrivateBroker":
        config = self.dir / "mosquitto.conf"
        config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                          f"log_dest file {self.dir / 'mosquitto.log'}\nlog_type error\nlog_type warning\n"
                          "max_queued_messages 10000\nset_tcp_nodelay true\n")
        self.proc = subprocess.Popen([self.executable, "-c", str(config)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.start_timeout
        while not accepts("127.0.0.1", self.port, 0.2):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
                log = (self.dir / "mosquitto.log")
                lines = err or (log.read_text().strip().splitlines() if log.exists() else [])
                raise TinyexitError(f"mosquitto did not start on port {self.port}: "
                                    f"{lines[-1] if lines else f'exit code {self.proc.returncode}'}")
            if time.monotonic() > deadline:
                self.stop()
                raise TinyexitError(f"mosquitto did not accept connections on port {self.port} "
                                    f"within {self.start_timeout:g} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PrivateBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def new_client(client_id: str | None = None):
    """A paho-mqtt 2.x client speaking MQTT 5 (shared subscriptions), reconnecting quickly after a broker loss."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"tinyexit-{uuid.uuid4().hex[:12]}",
                         protocol=mqtt.MQTTv5)
    client.reconnect_delay_set(min_delay=0.1, max_delay=1)
    client.on_socket_open = _no_delay  # small frames: Nagle + delayed ACKs would add ~40 ms per message
    return client


def _no_delay(client, userdata, sock) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not a TCP socket (e.g. a websocket wrapper)


def connect_client(client, url: str, keepalive: int = 10, timeout: float = 5.0, wait: bool = True) -> None:
    """Connect `client` (will and callbacks set before) to `url` and start its network thread. With `wait`,
    an unreachable broker is one error line after `timeout`; without, the thread keeps trying (a device that
    starts before its broker falls back until it appears)."""
    host, port = parse_url(url)
    if wait:
        check_reachable(url, timeout)
    client.connect_async(host, port, keepalive=keepalive, clean_start=True)
    client.loop_start()
    if wait:
        deadline = time.monotonic() + timeout
        while not client.is_connected():
            if time.monotonic() > deadline:
                client.loop_stop()
                raise TinyexitError(f"MQTT broker {url} accepted TCP but no MQTT connection within {timeout:g} s")
            time.sleep(0.02)
