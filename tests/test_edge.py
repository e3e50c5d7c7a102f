"""The edge cascade against a real mosquitto (and redis-server): answers, registry, cache and every fault.

Inputs are random int8 tensors of the shipped example HAR export: these tests check mechanics (the edge's
answer is the final exit TFLite Micro computes for the same tensor), not accuracy (bench/edge_cache.py).
Every sample must get exactly one answer: the edge's, the cache's, or the device's own final exit.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tinyexit.edge import protocol, registry, service
from tinyexit.edge.broker import PrivateBroker, accepts, free_port, new_client, connect_client
from tinyexit.edge.cache import PrivateRedis, RedisCache, SqliteCache, exact_key
from tinyexit.edge.client import EdgeClient
from tinyexit.edge.worker import EdgeModel, Worker
from tinyexit.errors import TinyexitError
from tinyexit.paths import EXAMPLE_MODEL

EXPORT = str(EXAMPLE_MODEL)
OTHER_HASH = bytes(range(32))


@pytest.fixture(scope="module")
def model():
    return EdgeModel(EXPORT)


@pytest.fixture(scope="module")
def samples(model):
    """Random int8 inputs and their final-exit class (what the device's own last exit answers)."""
    rng = np.random.default_rng(17)
    xs = [rng.integers(-128, 128, (1, 128, 1, 9)).astype(np.int8) for _ in range(8)]
    return [(x, model.run(protocol.RAW_INPUT_CUT, x)[0]) for x in xs]


class Serving:
    """`service.serve` in a thread (its workers are real processes) on a broker of the test's."""

    def __init__(self, url, fleet, tmp_path, workers=2, cache=None):
        self.stop = threading.Event()
        self.errors = []
        self.fleet = fleet
        cache = cache or f"sqlite:{tmp_path / f'cache-{fleet}.sqlite'}"

        def run():
            try:
                service.serve(EXPORT, url, workers, cache=cache, fleet=fleet, stop=self.stop, out=open(os.devnull, "w"))
            except Exception as err:  # surfaced by the test through self.errors
                self.errors.append(err)

        self.url = url
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while len(self.workers()) < workers:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, "edge workers did not register"
            time.sleep(0.2)

    def workers(self):
        return [m for m in registry.read(self.url, self.fleet, quiet=0.2) if m.role == "worker"]

    def close(self):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def broker():
    with PrivateBroker() as b:
        yield b


@pytest.fixture(scope="module")
def edge(broker, tmp_path_factory):
    s = Serving(broker.url, "main", tmp_path_factory.mktemp("edge"))
    yield s
    s.close()


def one_answer_each(client, samples, **kw):
    answers = [client.answer(x.tobytes(), fallback_cls=cls, **kw) for x, cls in samples]
    st = client.stats
    assert len(answers) == len(samples)
    assert st.answered_edge + st.answered_cache + st.fallbacks == st.samples
    return answers


# ---- protocol ----

def test_frames_round_trip_and_damage_is_refused():
    req = protocol.Request(7, "dev-1", OTHER_HASH, 0, protocol.CODEC_RAW, b"\x01\x02\x03", b"p")
    frame = req.encode()
    assert protocol.parse_request(frame) == req
    for damaged in (frame[:-1], frame[:len(frame) // 2], frame[:10], frame[:-5] + b"\xff" + frame[-4:],
                    b"TXQ\x02" + frame[4:]):
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_request(damaged)
    assert protocol.peek_header(frame[:len(frame) - 2]) == ("dev-1", 7, OTHER_HASH)
    assert protocol.peek_header(frame[:20]) is None
    rep = protocol.Reply(7, OTHER_HASH, protocol.OK, 3, 30000, protocol.SOURCE_CACHE, "w0")
    assert protocol.parse_reply(rep.encode()) == rep
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_reply(rep.encode()[:-2])
    with pytest.raises(protocol.ProtocolError):
        protocol.check_id("a/b")


# ---- the service ----

def test_edge_answers_are_the_final_exit_and_repeats_come_from_the_cache(edge, model, samples):
    with EdgeClient(edge.url, "dev-answers", model.hash, fleet="main", board="nano33ble", deadline_s=5) as c:
        assert c.wait_connected(5)
        first = one_answer_each(c, samples)
        again = one_answer_each(c, samples)
    assert [a.cls for a in first] == [cls for _, cls in samples]
    assert all(a.source == "edge" for a in first)
    assert [a.cls for a in again] == [cls for _, cls in samples]
    assert all(a.source == "cache" for a in again)
    assert c.stats.fallbacks == 0
    assert {a.worker_id for a in first} == {m.id for m in edge.workers()}  # the shared subscription spreads them


def test_a_cut_tensor_runs_the_remaining_stages(edge, model, samples):
    from tinyexit.reference import load_stages

    stage0 = load_stages(model.manifest)[0]
    with EdgeClient(edge.url, "dev-cut", model.hash, fleet="main", deadline_s=5) as c:
        assert c.wait_connected(5)
        cuts = [(stage0(x)[0], cls) for x, cls in samples[:3]]
        answers = [c.answer(f.tobytes(), fallback_cls=-1, cut=0) for f, _ in cuts]
        bad = c.answer(b"\0" * 5, fallback_cls=-1, cut=0)  # wrong size for cut 0
    assert [a.cls for a in answers] == [cls for _, cls in cuts]
    assert bad.source == "device" and c.stats.fallback_refused == 1


def test_registry_records_and_peer_choice(broker):
    h = bytes(32)
    m4 = EdgeClient(broker.url, "m4", h, fleet="reg", board="nano33ble")
    m7 = EdgeClient(broker.url, "m7", h, fleet="reg", board="nucleo-h7a3zi-q")
    try:
        assert m4.wait_connected(5) and m7.wait_connected(5)
        time.sleep(0.3)
        members = registry.read(broker.url, "reg")
        assert {m.id for m in members} == {"m4", "m7"}
        peer = registry.choose_peer(members, h.hex(), exclude="m4", better_than=next(m for m in members if m.id == "m4"))
        assert peer is not None and peer.id == "m7"
        assert registry.choose_peer(members, OTHER_HASH.hex()) is None  # nobody runs that model
        m7.set_load(1.0)  # fully busy: no spare capacity left
        time.sleep(0.3)
        members = registry.read(broker.url, "reg")
        assert registry.choose_peer(members, h.hex(), role="device").id == "m4"
    finally:
        m4.close()
        m7.close()
    time.sleep(0.3)
    assert registry.read(broker.url, "reg") == []


def test_a_device_that_dies_is_removed_by_its_last_will(broker):
    code = ("import sys, time; from tinyexit.edge.client import EdgeClient; "
            f"c = EdgeClient({broker.url!r}, 'doomed', bytes(32), fleet='will'); c.wait_connected(5); "
            "print('up', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        time.sleep(0.3)
        assert [m.id for m in registry.read(broker.url, "will")] == ["doomed"]
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.5)
    assert registry.read(broker.url, "will") == []


# ---- faults ----

def test_broker_down_at_start_then_up(tmp_path, model, samples):
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    with EdgeClient(url, "dev-early", model.hash, fleet="late", deadline_s=3) as c:
        t0 = time.monotonic()
        down = one_answer_each(c, samples[:3])
        assert time.monotonic() - t0 < 1.0  # no waiting on a broker that is not there
        assert all(a.source == "device" for a in down) and c.stats.fallback_offline == 3
        assert [a.cls for a in down] == [cls for _, cls in samples[:3]]  # the device's own final exit
        with PrivateBroker(port) as b:
            s = Serving(b.url, "late", tmp_path, workers=1)
            try:
                assert c.wait_connected(10)
                up = one_answer_each(c, samples[3:5])
            finally:
                s.close()
    assert all(a.source == "edge" for a in up)
    assert c.stats.samples == 5 and c.stats.fallbacks == 3


def test_broker_restarted_mid_run(tmp_path, model, samples):
    with PrivateBroker() as b:
        s = Serving(b.url, "restart", tmp_path, workers=1)
        try:
            with EdgeClient(b.url, "dev-restart", model.hash, fleet="restart", deadline_s=3) as c:
                assert c.wait_connected(5)
                before = one_answer_each(c, samples[:2])
                b.stop()
                time.sleep(0.3)
                t0 = time.monotonic()
                during = one_answer_each(c, samples[2:4])
                assert time.monotonic() - t0 < 1.0
                b.start()
                assert c.wait_connected(10)
                deadline = time.monotonic() + 20  # the worker reconnects and re-subscribes by itself
                while not s.workers():
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
                after = one_answer_each(c, samples[4:6])
        finally:
            s.close()
    assert [a.source for a in before] == ["edge"] * 2
    assert [a.source for a in during] == ["device"] * 2
    assert all(a.source in ("edge", "cache") for a in after)
    assert c.stats.fallbacks == 2 and c.stats.samples == 6


def _frozen_worker(edge):
    w = edge.workers()[0]
    os.kill(w.pid, signal.SIGSTOP)
    return w


def test_late_replies_from_a_stalled_worker_are_dropped(edge, model, samples):
    w = _frozen_worker(edge)
    try:
        with EdgeClient(edge.url, "dev-late", model.hash, fleet="main", deadline_s=0.4, retries=0) as c:
            assert c.wait_connected(5)
            answers = one_answer_each(c, samples[:4])
            assert c.stats.fallback_timeout >= 1  # the share the frozen worker held
            os.kill(w.pid, signal.SIGCONT)  # it wakes and answers requests given up on
            time.sleep(1.0)
            assert c.stats.dropped_late >= 1
            assert len(answers) == 4 and all(a.cls == cls for a, (_, cls) in zip(answers, samples))
    finally:
        os.kill(w.pid, signal.SIGCONT)


def test_worker_killed_mid_request(edge, model, samples):
    w = _frozen_worker(edge)  # holding whatever the broker hands it
    with EdgeClient(edge.url, "dev-kill", model.hash, fleet="main", deadline_s=1.0, retries=1) as c:
        assert c.wait_connected(5)
        held = one_answer_each(c, samples[:2])
        os.kill(w.pid, signal.SIGKILL)
        after = one_answer_each(c, samples[2:6])
    # a request the frozen worker held was re-sent within the deadline and answered by the other worker
    assert c.stats.resent >= 1
    assert [a.cls for a in held + after] == [cls for _, cls in samples[:6]]
    assert all(a.source in ("edge", "cache") for a in after)
    deadline = time.monotonic() + 30  # the service restarts the killed worker
    while len({m.id for m in edge.workers()}) < 2 or w.pid in {m.pid for m in edge.workers()}:
        assert time.monotonic() < deadline
        time.sleep(0.3)


class FakeEdge:
    """Answers every request on its own fleet with junk first: a garbled frame, a reply for another model, the
    right reply twice, and a reply to a request nobody sent."""

    def __init__(self, url, fleet, model):
        self.model = model
        self.client = new_client()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(protocol.topic_requests(fleet), qos=1)
        self.client.on_message = self._on_message
        self.fleet = fleet
        connect_client(self.client, url)

    def _on_message(self, client, userdata, msg):
        req = protocol.parse_request(msg.payload)
        x = np.frombuffer(req.payload, np.int8).reshape(1, 128, 1, 9)
        cls, conf = self.model.run(req.cut, x)
        topic = protocol.topic_reply(self.fleet, req.device_id)
        good = protocol.Reply(req.request_id, req.model_hash, protocol.OK, cls, conf, worker_id="fake")
        for frame in (good.encode()[:-3],
                      protocol.Reply(req.request_id, OTHER_HASH, protocol.OK, (cls + 1) % 6, 32767).encode(),
                      good.encode(), good.encode(),
                      protocol.Reply(req.request_id + 1000, req.model_hash, protocol.OK, 0, 1).encode()):
            client.publish(topic, frame, qos=1)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_duplicate_foreign_and_garbled_replies_are_dropped(broker, model, samples):
    fake = FakeEdge(broker.url, "fake", model)
    try:
        with EdgeClient(broker.url, "dev-dup", model.hash, fleet="fake", deadline_s=3) as c:
            assert c.wait_connected(5)
            answers = one_answer_each(c, samples[:4])
            time.sleep(0.3)
    finally:
        fake.close()
    assert [a.cls for a in answers] == [cls for _, cls in samples[:4]]
    assert all(a.source == "edge" and a.worker_id == "fake" for a in answers)
    st = c.stats
    assert (st.dropped_garbled, st.dropped_other_model, st.dropped_duplicate, st.dropped_unknown_request) == (4, 4, 4, 4)
    assert st.fallbacks == 0


def test_a_device_for_another_model_is_refused_and_falls_back(edge, samples):
    with EdgeClient(edge.url, "dev-other", OTHER_HASH, fleet="main", deadline_s=3) as c:
        assert c.wait_connected(5)
        answers = one_answer_each(c, samples[:2])
    assert [a.source for a in answers] == ["device"] * 2
    assert c.stats.fallback_refused == 2 and "unknown model" in answers[0].reason


def test_a_device_that_drops_mid_frame(edge, model, samples):
    """A truncated or garbled request is refused (error reply to a legible device id), never run; a half MQTT
    packet on a dropped TCP connection leaves the broker and workers serving."""
    replies = []
    listener = new_client()
    listener.on_connect = lambda c, u, f, rc, p: c.subscribe(protocol.topic_reply("main", "dev-drop"), qos=1)
    listener.on_message = lambda c, u, msg: replies.append(protocol.parse_reply(msg.payload))
    connect_client(listener, edge.url)
    time.sleep(0.3)
    frame = protocol.Request(5, "dev-drop", model.hash, -1, 0, samples[0][0].tobytes()).encode()
    flipped = bytearray(frame)
    flipped[100] ^= 0x40
    for damaged in (frame[:len(frame) // 2], bytes(flipped), frame[:20]):
        listener.publish(protocol.topic_requests("main"), damaged, qos=1)
    host, port = "127.0.0.1", int(edge.url.rsplit(":", 1)[1])
    with socket.create_connection((host, port)) as raw:  # MQTT CONNECT, then half a PUBLISH, then gone
        client_id = b"half"
        body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
        raw.sendall(bytes([0x10, len(body)]) + body)
        raw.recv(4)
        topic = protocol.topic_requests("main").encode()
        raw.sendall(bytes([0x30, 0xFF, 0x7F]) + len(topic).to_bytes(2, "big") + topic + frame[:40])
    deadline = time.monotonic() + 5
    while len(replies) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    listener.disconnect()
    listener.loop_stop()
    # frame[:20] names nobody: dropped; the other two are refused at once, by request id
    assert [(r.status, r.request_id) for r in replies] == [(protocol.BAD_REQUEST, 5)] * 2
    with EdgeClient(edge.url, "dev-after-drop", model.hash, fleet="main", deadline_s=3) as c:
        assert c.wait_connected(5)
        (a,) = one_answer_each(c, samples[:1])
    assert a.source in ("edge", "cache") and a.cls == samples[0][1]


# ---- cache ----

def _cache_checks(cache, model, samples):
    x, cls = samples[0]
    assert cache.get(model.hash, -1, x) is None
    cache.put(model.hash, -1, x, cls, 30000)
    hit = cache.get(model.hash, -1, x)
    assert (hit.kind, hit.cls) == ("exact", cls)
    # the same tensor asked for by another model: never answered from this entry, exact or near
    assert cache.get(OTHER_HASH, -1, x) is None
    # an entry stored under another model's key but written by this model (a forged or colliding key)
    cache._put(exact_key(OTHER_HASH, -1, samples[1][0]), model.hash.hex(), -1, 5, 1, b"", [0, 0, 0, 0])
    assert cache.get(OTHER_HASH, -1, samples[1][0], near=False) is None and cache.foreign >= 1
    # a stream: the window shifted by a few samples is a near-duplicate, another window is not
    shifted = np.roll(x, 4, axis=1)
    near = cache.get(model.hash, -1, shifted)
    assert near is not None and near.kind == "near" and near.cls == cls
    assert cache.get(model.hash, -1, samples[2][0]) is None


def test_sqlite_cache_is_exact_near_and_per_model(tmp_path, model, samples):
    with SqliteCache(tmp_path / "c.sqlite", near_threshold=0.1) as cache:
        _cache_checks(cache, model, samples)
    with SqliteCache(tmp_path / "c.sqlite") as again:  # another process's view of the same file
        assert again.get(model.hash, -1, samples[0][0]).kind == "exact"


def test_redis_cache_is_exact_near_and_per_model(model, samples):
    with PrivateRedis() as server, RedisCache(server.url, near_threshold=0.1) as cache:
        _cache_checks(cache, model, samples)


# ---- the commands as processes ----

def test_edge_serve_and_status_as_processes(tmp_path, model, samples):
    env = {**os.environ, "TINYEXIT_CACHE": str(tmp_path / "cache")}
    serve = subprocess.Popen([sys.executable, "-m", "tinyexit", "edge", "serve", EXPORT, "--workers", "2",
                              "--cache", "redis:start", "--fleet", "cli"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = serve.stdout.readline()
        assert line.startswith("edge ready:"), line + serve.stderr.read() if serve.poll() is not None else line
        url = re.search(r"broker (mqtt://\S+),", line).group(1)
        with EdgeClient(url, "dev-cli", model.hash, fleet="cli", board="nano33ble", deadline_s=5) as c:
            assert c.wait_connected(5)
            answers = one_answer_each(c, samples[:2] * 2)
            assert [a.source for a in answers] == ["edge", "edge", "cache", "cache"]  # through redis
            status = run_cli("edge", "status", "--fleet", "cli", timeout=60, env=env)  # finds the broker itself
            assert status.returncode == 0, status.stderr
            assert "1 devices, 2 edge workers" in status.stdout
            assert "dev-cli" in status.stdout and "nano33ble" in status.stdout and "cortex-m4" in status.stdout
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
        port = int(url.rsplit(":", 1)[1])
        assert not accepts("127.0.0.1", port)  # the private broker went with it
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


def test_edge_command_errors_are_one_line(tmp_path):
    env = {"TINYEXIT_CACHE": str(tmp_path / "cache")}
    assert_one_line_error(run_cli("edge", "serve", str(tmp_path), env=env), "no manifest.json")
    assert_one_line_error(run_cli("edge", "serve", EXPORT, "--cache", "memcached://x", env=env), "--cache")
    assert_one_line_error(run_cli("edge", "serve", EXPORT, "--workers", "0", env=env), "--workers")
    assert_one_line_error(run_cli("edge", "status", env=env), "no running")
    t0 = time.monotonic()
    assert_one_line_error(run_cli("edge", "status", "--broker", f"mqtt://127.0.0.1:{free_port()}", env=env),
                          "unreachable")
    assert time.monotonic() - t0 < 30
    assert_one_line_error(run_cli("edge", "status", "--broker", "http://x", env=env), "mqtt://")
    for args in (("edge", "--help"), ("edge", "serve", "--help"), ("edge", "status", "--help")):
        proc = run_cli(*args)
        assert proc.returncode == 0 and "usage: tinyexit edge" in proc.stdout


def test_missing_mosquitto_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    import tinyexit.edge.broker as broker_mod

    monkeypatch.setattr(broker_mod, "MOSQUITTO_PATHS", ())
    with pytest.raises(TinyexitError, match="setup.sh"):
        PrivateBroker()


def test_an_edge_model_answers_raw_inputs_and_stages_answer_cuts(samples):
    """--edge-model: a plain .tflite on the same input (here the export's unsplit model, whose first output is
    the early exit's logits) answers cut -1; a cut tensor still runs the export's remaining stages."""
    from tinyexit.reference import StageInterpreter, load_stages

    unsplit = EXAMPLE_MODEL / "model_int8.tflite"
    w = Worker(EdgeModel(EXPORT, edge_model=unsplit), "f", "w0")
    reference = StageInterpreter(unsplit.read_bytes())
    stage0 = load_stages(w.model.manifest)[0]
    for x, final_cls in samples[:4]:
        raw = protocol.Request(1, "d", w.model.hash, -1, 0, x.tobytes()).encode()
        _, reply = w.handle(raw)
        assert reply.ok and reply.cls == int(np.argmax(reference(x)[0]))
        cut = protocol.Request(2, "d", w.model.hash, 0, 0, stage0(x)[0].tobytes()).encode()
        _, reply = w.handle(cut)
        assert reply.ok and reply.cls == final_cls
    with pytest.raises(TinyexitError, match="input"):
        EdgeModel(EXPORT, edge_model=EXAMPLE_MODEL / "stage_1.tflite")  # another input shape


def test_coded_payloads_are_decoded_or_refused(samples):
    w = Worker(EdgeModel(EXPORT), "f", "w0")
    x = samples[0][0]
    unknown = protocol.Request(1, "d", w.model.hash, -1, 200, x.tobytes()).encode()
    _, reply = w.handle(unknown)
    assert reply.status == protocol.BAD_REQUEST and "codec kind 200" in reply.message
    codec = pytest.importorskip("tinyexit.edge.codec")  # helper "codec"'s module, once it is on main
    from tinyexit.reference import load_stages

    features = load_stages(w.model.manifest)[0](x)[0]
    zp = w.model.zero_point_of(0)
    stream = codec.encode(codec.Params(codec.Kind.LOSSLESS, zp), features)
    _, reply = w.handle(protocol.Request(2, "d", w.model.hash, 0, int(codec.Kind.LOSSLESS), stream).encode())
    assert reply.ok and reply.cls == samples[0][1]
    _, reply = w.handle(protocol.Request(3, "d", w.model.hash, 0, int(codec.Kind.LOSSLESS), stream[:-1]).encode())
    assert reply.status == protocol.BAD_REQUEST
