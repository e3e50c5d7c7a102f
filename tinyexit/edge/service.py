"""`tinyexit edge serve`: broker (private or given), cache (resolved once), N worker processes, supervised.

The service checks everything it can before starting anything (export, edge model, cache spec, broker),
starts the workers as `python -m tinyexit.edge.worker` processes, waits until each has registered, prints one
`ready` line, then restarts any worker that dies (a killed worker loses only the requests it held: devices
re-send or fall back) until SIGINT/SIGTERM, when it stops workers, private redis and private broker in turn.
It leaves `<cache dir>/edge/<fleet>.json` (broker URL, pid) so `tinyexit edge status` finds the broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tinyexit.edge import protocol
from tinyexit.errors import TinyexitError

READY_TIMEOUT_S = 60.0
MAX_RESTARTS_PER_MINUTE = 10


def state_file(fleet: str) -> Path:
    from tinyexit.paths import cache_dir

    return cache_dir() / "edge" / f"{fleet}.json"


def running_broker(fleet: str) -> str | None:
    """The broker URL a live `tinyexit edge serve` of this fleet announced, if any."""
    path = state_file(fleet)
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
        return str(state["broker"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _Registrations:
    """Watches the fleet's registry topic: which workers are registered now."""

    def __init__(self, url: str, fleet: str):
        from tinyexit.edge.broker import connect_client, new_client

        self.present: set[str] = set()
        self.lock = threading.Lock()
        self.client = new_client()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(protocol.topic_registry(fleet), qos=1)
        self.client.on_message = self._on_message
        connect_client(self.client, url)

    def _on_message(self, client, userdata, msg):
        member_id = msg.topic.rsplit("/", 1)[-1]
        with self.lock:
            if msg.payload:
                self.present.add(member_id)
            else:
                self.present.discard(member_id)

    def has(self, ids) -> bool:
        with self.lock:
            return set(ids) <= self.present

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def serve(export: str, broker: str | None = None, workers: int = 2, edge_model: str | None = None,
          cache: str | None = None, fleet: str = "default", near_threshold: float | None = None,
          near_min_confidence: float | None = None,
          stop: threading.Event | None = None, out=sys.stdout) -> int:
    from tinyexit.edge import cache as cache_mod
    from tinyexit.edge.broker import PrivateBroker, check_reachable
    from tinyexit.edge.worker import EdgeModel
    from tinyexit.paths import cache_dir

    protocol.check_id(fleet, "--fleet")
    cache = cache_mod.check_spec(cache or f"sqlite:{cache_dir() / 'edge' / f'cache-{fleet}.sqlite'}")
    model = EdgeModel(export, edge_model)  # every one-line error about the export or edge model, now
    stop = stop or threading.Event()
    private_broker = private_redis = None
    procs: dict[str, subprocess.Popen] = {}
    watcher = None
    try:
        if broker is None:
            private_broker = PrivateBroker().start()
            broker = private_broker.url
        else:
            check_reachable(broker)
        if cache == "redis:start":
            private_redis = cache_mod.PrivateRedis().start()
            cache = private_redis.url
        opened = cache_mod.open_cache(cache)  # reachable and writable, before the workers try
        if opened is not None:
            opened.close()
        ids = [f"edge-{fleet}-{i}" for i in range(workers)]
        command = lambda wid: [sys.executable, "-m", "tinyexit.edge.worker", str(export), "--broker", broker,
                               "--fleet", fleet, "--id", wid, "--cache", cache,
                               *(["--edge-model", str(edge_model)] if edge_model else []),
                               *(["--near-threshold", str(near_threshold)] if near_threshold is not None else []),
                               *(["--near-min-confidence", str(near_min_confidence)]
                                 if near_min_confidence is not None else [])]
        watcher = _Registrations(broker, fleet)
        for wid in ids:
            procs[wid] = subprocess.Popen(command(wid), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not watcher.has(ids):
            dead = [w for w, p in procs.items() if p.poll() is not None]
            if dead:
                raise TinyexitError(f"edge worker {dead[0]} exited with code {procs[dead[0]].returncode} at start")
            if time.monotonic() > deadline or stop.is_set():
                raise TinyexitError(f"edge workers did not register within {READY_TIMEOUT_S:g} s")
            time.sleep(0.05)
        path = state_file(fleet)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"broker": broker, "pid": os.getpid(), "export": str(export)}))
        print(f"edge ready: model {model.hash.hex()[:12]} ({export}), broker {broker}, fleet {fleet}, "
              f"{workers} worker{'s' * (workers != 1)} [{', '.join(f'{w}:{procs[w].pid}' for w in ids)}], "
              f"cache {cache}{', edge model ' + str(edge_model) if edge_model else ''}", file=out, flush=True)
        restarts: list[float] = []
        while not stop.wait(0.2):
            for wid, p in procs.items():
                if p.poll() is not None:
                    restarts = [t for t in restarts if t > time.monotonic() - 60] + [time.monotonic()]
                    if len(restarts) > MAX_RESTARTS_PER_MINUTE:
                        raise TinyexitError(f"edge workers keep dying ({len(restarts)} restarts in a minute; "
                                            f"last: {wid}, exit code {p.returncode})")
                    print(f"edge: worker {wid} (pid {p.pid}) exited with code {p.returncode}; restarting it",
                          file=out, flush=True)
                    procs[wid] = subprocess.Popen(command(wid), stdin=subprocess.DEVNULL)
        return 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if watcher is not None:
            watcher.close()
        if private_redis is not None:
            private_redis.stop()
        if private_broker is not None:
            private_broker.close()
        try:
            if json.loads(state_file(fleet).read_text()).get("pid") == os.getpid():
                state_file(fleet).unlink()
        except (OSError, ValueError):
            pass


def serve_until_signal(**kwargs) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *a: stop.set())
    return serve(stop=stop, **kwargs)
