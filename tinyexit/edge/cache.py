"""The edge's intermediate-result cache: (model, cut, quantized cut tensor) -> (class, confidence).

Two lookups:
- exact: key = sha256(model hash, cut index, tensor shape, tensor bytes); the same tensor again (a device that
  retries, two devices that see the same input) is answered without running anything.
- near-duplicate, for streams: consecutive HAR windows overlap by 50% and a wake word repeats, so the tensors
  are shifted, not equal. The tensor's *summary* (per channel: mean and standard deviation over time/space,
  around the zero point) barely moves under such a shift. A SimHash of the summary (32 random hyperplanes,
  4 bands of 8 bits, seeded so every process agrees) finds candidates that share a band; a candidate is used
  when the relative distance of the summaries, |a - b| / max(|a|, |b|), is at most `near_threshold` and
  the cached answer was confident (max-prob >= `near_min_confidence_q15`: an uncertain answer is not worth
  copying to a neighbour). `bench/edge_cache.py` measures hit rate and accuracy against both; the defaults
  (0.05, 0.9) changed no answer on the ordered HAR test stream.

Every entry records the model hash that wrote it and a lookup compares it: an entry written by another
model (or a key collision) is never used. Backends: SQLite (default; WAL, safe for several worker
processes on one machine) and Redis (shared by several edge processes or machines; `redis:start` runs a
private redis-server). Specs: `sqlite:PATH`, `redis://HOST:PORT[/DB]`, `redis:start`, `none`.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyexit.errors import TinyexitError

BANDS, BITS = 4, 8
DEFAULT_NEAR_THRESHOLD = 0.05
DEFAULT_NEAR_MIN_CONFIDENCE_Q15 = 29491  # 0.9: on the HAR stream no answer changed (bench/edge_cache.py)
CANDIDATES_PER_BAND = 16


@dataclass
class Hit:
    cls: int
    confidence_q15: int
    kind: str  # "exact" | "near"
    distance: float = 0.0


def exact_key(model_hash: bytes, cut: int, tensor: np.ndarray) -> bytes:
    t = np.ascontiguousarray(tensor)
    h = hashlib.sha256(model_hash)
    h.update(int(cut).to_bytes(2, "little", signed=True))
    h.update(np.asarray(t.shape, np.int32).tobytes())
    h.update(str(t.dtype).encode())
    h.update(t.tobytes())
    return h.digest()


def summary(tensor: np.ndarray, zero_point: int = 0) -> np.ndarray:
    """Per channel mean and std of (tensor - zero point) over every other axis; the channel axis is the last
    axis longer than 1 (KWS's (49, 10, 1) input: the 10 coefficients)."""
    t = np.asarray(tensor, np.float32) - float(zero_point)
    dims = [d for d in t.shape if d > 1] or [1]
    t = t.reshape(-1, dims[-1]) if len(dims) > 1 else t.reshape(-1, 1)
    return np.concatenate([t.mean(axis=0), t.std(axis=0)]).astype(np.float32)


def _planes(model_hash: bytes, cut: int, size: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(model_hash + int(cut).to_bytes(2, "little", signed=True)).digest()[:8],
                          "little")
    return np.random.default_rng(seed).standard_normal((BANDS * BITS, size)).astype(np.float32)


def bands(model_hash: bytes, cut: int, s: np.ndarray) -> list[int]:
    """SimHash of the summary with each half centred (the common offset says nothing), cut into BANDS values."""
    half = len(s) // 2
    centred = np.concatenate([s[:half] - s[:half].mean(), s[half:] - s[half:].mean()]) if half else s
    bits = (_planes(model_hash, cut, len(s)) @ centred) > 0
    return [int(sum(int(b) << i for i, b in enumerate(bits[k * BITS:(k + 1) * BITS]))) for k in range(BANDS)]


def distance(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    scale = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)), 1e-6)
    return float(np.linalg.norm(a - b)) / scale


class ResultCache:
    """The lookups and statistics; a backend stores entries (`_get_exact`, `_candidates`, `_put`)."""

    def __init__(self, near_threshold: float | None = DEFAULT_NEAR_THRESHOLD, near_min_confidence_q15: int = DEFAULT_NEAR_MIN_CONFIDENCE_Q15):
        self.near_threshold = near_threshold
        self.near_min_confidence_q15 = near_min_confidence_q15  # near hits only from answers this confident
        self.exact_hits = self.near_hits = self.misses = self.foreign = 0

    def get(self, model_hash: bytes, cut: int, tensor: np.ndarray, zero_point: int = 0,
            near: bool = True) -> Hit | None:
        key = exact_key(model_hash, cut, tensor)
        row = self._get_exact(key)
        if row is not None:
            if row[0] == model_hash.hex() and row[1] == cut:
                self.exact_hits += 1
                return Hit(row[2], row[3], "exact")
            self.foreign += 1  # a key written for another model: never used
        if near and self.near_threshold is not None:
            s = summary(tensor, zero_point)
            best = None
            for owner, c, cls, conf, blob in self._candidates(model_hash, cut, bands(model_hash, cut, s)):
                if owner != model_hash.hex() or c != cut:
                    self.foreign += 1
                    continue
                if conf < self.near_min_confidence_q15:
                    continue
                d = distance(s, np.frombuffer(blob, np.float32))
                if d <= self.near_threshold and (best is None or d < best.distance):
                    best = Hit(cls, conf, "near", d)
            if best is not None:
                self.near_hits += 1
                return best
        self.misses += 1
        return None

    def put(self, model_hash: bytes, cut: int, tensor: np.ndarray, cls: int, confidence_q15: int,
            zero_point: int = 0) -> None:
        s = summary(tensor, zero_point)
        self._put(exact_key(model_hash, cut, tensor), model_hash.hex(), int(cut), int(cls), int(confidence_q15),
                  s.tobytes(), bands(model_hash, cut, s))

    @property
    def lookups(self) -> int:
        return self.exact_hits + self.near_hits + self.misses

    def stats(self) -> dict:
        n = self.lookups
        return {"lookups": n, "exact_hits": self.exact_hits, "near_hits": self.near_hits, "misses": self.misses,
                "hit_rate": (self.exact_hits + self.near_hits) / n if n else 0.0, "foreign_entries_refused": self.foreign}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SqliteCache(ResultCache):
    """One file, WAL journal: readers never block the writer; several processes share it."""

    def __init__(self, path: str | Path, near_threshold: float | None = DEFAULT_NEAR_THRESHOLD,
                 capacity: int = 100_000, near_min_confidence_q15: int = DEFAULT_NEAR_MIN_CONFIDENCE_Q15):
        super().__init__(near_threshold, near_min_confidence_q15)
        self.path = Path(path)
        self.capacity = capacity
        self._puts = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            band_columns = ", ".join(f"band{i} INTEGER" for i in range(BANDS))
            self.db.execute(f"CREATE TABLE IF NOT EXISTS entries (key BLOB PRIMARY KEY, model_hash TEXT, cut INTEGER, "
                            f"cls INTEGER, conf INTEGER, summary BLOB, {band_columns}, created REAL)")
            for i in range(BANDS):
                self.db.execute(f"CREATE INDEX IF NOT EXISTS entries_band{i} ON entries (model_hash, cut, band{i})")
        except sqlite3.Error as err:
            raise TinyexitError(f"cache {self.path}: cannot open it as SQLite ({err})") from None

    def _get_exact(self, key):
        return self.db.execute("SELECT model_hash, cut, cls, conf FROM entries WHERE key = ?", (key,)).fetchone()

    def _candidates(self, model_hash, cut, band_values):
        where = " OR ".join(f"band{i} = ?" for i in range(BANDS))
        return self.db.execute(f"SELECT model_hash, cut, cls, conf, summary FROM entries WHERE model_hash = ? AND cut = ? "
                               f"AND ({where}) ORDER BY created DESC LIMIT ?",
                               (model_hash.hex(), cut, *band_values, BANDS * CANDIDATES_PER_BAND)).fetchall()

    def _put(self, key, owner, cut, cls, conf, blob, band_values):
        self.db.execute(f"INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, {', '.join('?' * BANDS)}, ?)",
                        (key, owner, cut, cls, conf, blob, *band_values, time.time()))
        self._puts += 1
        if self._puts % 1000 == 0:  # bounded: the oldest entries go
            self.db.execute("DELETE FROM entries WHERE key IN (SELECT key FROM entries ORDER BY created DESC "
                            "LIMIT -1 OFFSET ?)", (self.capacity,))

    def close(self) -> None:
        self.db.close()


class RedisCache(ResultCache):
    """Entries as Redis hashes (with a TTL), bands as short lists of recent keys; shared by every edge process."""

    PREFIX = "tinyexit:cache"

    def __init__(self, url: str, near_threshold: float | None = DEFAULT_NEAR_THRESHOLD, ttl_s: int = 24 * 3600,
                 near_min_confidence_q15: int = DEFAULT_NEAR_MIN_CONFIDENCE_Q15):
        super().__init__(near_threshold, near_min_confidence_q15)
        import redis

        self.url, self.ttl = url, ttl_s
        try:
            self.r = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
            self.r.ping()
        except (redis.RedisError, ValueError) as err:
            raise TinyexitError(f"cache {url}: Redis is unreachable ({err})") from None

    def _band_key(self, model_hex, cut, i, value):
        return f"{self.PREFIX}:b:{model_hex}:{cut}:{i}:{value}"

    def _get_exact(self, key):
        row = self.r.hmget(f"{self.PREFIX}:e:{key.hex()}", "model_hash", "cut", "cls", "conf")
        return None if row[0] is None else (row[0].decode(), int(row[1]), int(row[2]), int(row[3]))

    def _candidates(self, model_hash, cut, band_values):
        pipe = self.r.pipeline()
        for i, v in enumerate(band_values):
            pipe.lrange(self._band_key(model_hash.hex(), cut, i, v), 0, CANDIDATES_PER_BAND - 1)
        keys = list(dict.fromkeys(k for found in pipe.execute() for k in found))
        pipe = self.r.pipeline()
        for k in keys:
            pipe.hmget(f"{self.PREFIX}:e:{k.decode()}", "model_hash", "cut", "cls", "conf", "summary")
        return [(r[0].decode(), int(r[1]), int(r[2]), int(r[3]), r[4]) for r in pipe.execute() if r[0] is not None]

    def _put(self, key, owner, cut, cls, conf, blob, band_values):
        entry = f"{self.PREFIX}:e:{key.hex()}"
        pipe = self.r.pipeline()
        pipe.hset(entry, mapping={"model_hash": owner, "cut": cut, "cls": cls, "conf": conf, "summary": blob})
        pipe.expire(entry, self.ttl)
        for i, v in enumerate(band_values):
            band = self._band_key(owner, cut, i, v)
            pipe.lpush(band, key.hex())
            pipe.ltrim(band, 0, CANDIDATES_PER_BAND - 1)
            pipe.expire(band, self.ttl)
        pipe.execute()

    def close(self) -> None:
        self.r.close()


class PrivateRedis:
    """A redis-server of our own on a free loopback port, nothing saved to disk."""

    def __init__(self):
        self.executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(self.executable).exists():
            raise TinyexitError("redis-server is not installed (run ./setup.sh, or give --cache redis://HOST:PORT)")
        from tinyexit.edge.broker import free_port

        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tinyexit-redis-"))
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "PrivateRedis":
        from tinyexit.edge.broker import accepts

        self.proc = subprocess.Popen([self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir), "--loglevel", "warning"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not accepts("127.0.0.1", self.port, 0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise TinyexitError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def check_spec(spec: str) -> str:
    if spec == "none" or spec == "redis:start" or spec.startswith("redis://"):
        return spec
    if spec.startswith("sqlite:") and len(spec) > len("sqlite:"):
        return spec
    raise TinyexitError(f"--cache {spec}: give sqlite:PATH, redis://HOST:PORT[/DB], redis:start or none")


def open_cache(spec: str, near_threshold: float | None = DEFAULT_NEAR_THRESHOLD,
               near_min_confidence_q15: int = DEFAULT_NEAR_MIN_CONFIDENCE_Q15) -> ResultCache | None:
    """A cache from a resolved spec (`redis:start` is resolved to the private server's URL by the service)."""
    check_spec(spec)
    if spec == "none":
        return None
    if spec.startswith("redis://"):
        return RedisCache(spec, near_threshold, near_min_confidence_q15=near_min_confidence_q15)
    if spec == "redis:start":
        raise TinyexitError("redis:start must be resolved to a URL before workers open the cache")
    return SqliteCache(spec[len("sqlite:"):], near_threshold, near_min_confidence_q15=near_min_confidence_q15)
