"""The device side of the edge protocol, in Python (what `tinyexit edge run` and `tinyexit bridge` speak for a
firmware instance).

`EdgeClient.answer(...)` gives every sample exactly one answer: the edge's (or the edge cache's) reply to this
request for this model, or, on anything else, the device's own final exit (a fallback, counted):
- the broker is down (at start, or lost mid-run: paho reconnects in the background and the next samples use
  the edge again), or drops while a request waits;
- no valid reply before the deadline (a worker killed mid-request, an overloaded edge); within the deadline
  the request is re-sent `retries` times with the same request id, so a worker that died holding it is
  replaced by another one;
- an error reply (model unknown to the edge, damaged request).
Replies that are not the one awaited are dropped and counted: a second reply to an answered request
(duplicate), a reply to a request given up on (late), a reply naming another model hash, a damaged frame.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import asdict, dataclass

from tinyexit.edge import protocol, registry
from tinyexit.edge.protocol import Reply, Request


@dataclass
class ClientStats:
    samples: int = 0
    answered_edge: int = 0
    answered_cache: int = 0
    fallbacks: int = 0
    fallback_offline: int = 0  # broker not connected when the sample came
    fallback_timeout: int = 0  # no valid reply before the deadline (or the broker dropped meanwhile)
    fallback_refused: int = 0  # the edge answered with an error
    resent: int = 0
    dropped_duplicate: int = 0
    dropped_late: int = 0
    dropped_other_model: int = 0
    dropped_unknown_request: int = 0
    dropped_garbled: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Answer:
    cls: int
    source: str  # "edge" | "cache" | "device"
    confidence_q15: int = 0
    worker_id: str = ""
    reason: str = ""  # why a fallback happened


class EdgeClient:
    """One device on the broker: registered (retained record + last will), one request in flight at a time."""

    def __init__(self, url: str, device_id: str, model_hash: bytes, fleet: str = "default", board: str = "",
                 capabilities: dict | None = None, deadline_s: float = 1.0, retries: int = 1):
        from tinyexit.edge.broker import connect_client, new_client, parse_url

        parse_url(url)
        self.url, self.fleet, self.model_hash = url, fleet, model_hash
        self.device_id = protocol.check_id(device_id, "device id")
        self.deadline_s, self.retries = deadline_s, retries
        self.stats = ClientStats()
        self.member = protocol.Member(device_id, "device", board, model_hash.hex(),
                                      capabilities if capabilities is not None else registry.capabilities_of_board(board))
        self._lock = threading.Condition()
        self._pending: int | None = None
        self._result: Reply | None = None
        self._answered: collections.deque = collections.deque(maxlen=4096)  # ids of answered requests
        self._given_up: collections.deque = collections.deque(maxlen=4096)  # ids that fell back
        self._connected_epoch = 0  # counts connections: a drop while waiting ends the wait
        self._next_id = random.getrandbits(32)  # a restarted device does not take its old replies as new
        self.client = new_client(f"dev-{device_id}-{random.getrandbits(24):06x}")
        registry.set_will(self.client, fleet, device_id)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        connect_client(self.client, url, wait=False)  # a broker that is down only means fallbacks

    # ---- paho callbacks (network thread) ----
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            return
        client.subscribe(protocol.topic_reply(self.fleet, self.device_id), qos=1)
        registry.publish(client, self.fleet, self.member)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._lock:
            self._connected_epoch += 1
            self._lock.notify_all()

    def _on_message(self, client, userdata, msg):
        try:
            reply = protocol.parse_reply(msg.payload)
        except protocol.ProtocolError:
            with self._lock:
                self.stats.dropped_garbled += 1
            return
        with self._lock:
            if reply.request_id == self._pending and self._result is None:
                if reply.model_hash != self.model_hash and reply.status != protocol.BAD_REQUEST:
                    self.stats.dropped_other_model += 1
                    return
                self._result = reply
                self._lock.notify_all()
            elif reply.request_id in self._answered or (reply.request_id == self._pending):
                self.stats.dropped_duplicate += 1
            elif reply.request_id in self._given_up:
                self.stats.dropped_late += 1
            else:
                self.stats.dropped_unknown_request += 1

    # ---- device side ----
    @property
    def connected(self) -> bool:
        return self.client.is_connected()

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.connected

    def request(self, payload: bytes, cut: int = protocol.RAW_INPUT_CUT, codec: int = protocol.CODEC_RAW,
                codec_params: bytes = b"") -> tuple[Reply | None, str]:
        """(the edge's OK reply or None, reason for None). At most one request in flight."""
        with self._lock:
            request_id = self._next_id
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            if not self.connected:
                self._given_up.append(request_id)
                return None, "offline"
            frame = Request(request_id, self.device_id, self.model_hash, cut, codec, payload, codec_params).encode()
            self._pending, self._result = request_id, None
            epoch = self._connected_epoch
        topic = protocol.topic_requests(self.fleet)
        start = time.monotonic()
        sends = self.retries + 1
        reason = "timeout"
        with self._lock:
            for attempt in range(sends):
                if attempt:
                    self.stats.resent += 1
                self.client.publish(topic, frame, qos=1)
                until = start + self.deadline_s * (attempt + 1) / sends
                while self._result is None and self._connected_epoch == epoch:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._lock.wait(left)
                if self._result is not None or self._connected_epoch != epoch:
                    break
            result, self._pending = self._result, None
            if result is None:
                self._given_up.append(request_id)
                return None, "timeout" if self._connected_epoch == epoch else "broker lost"
            self._answered.append(request_id)
        if not result.ok:
            return None, f"refused: {protocol.STATUS_NAMES.get(result.status, result.status)} ({result.message})"
        return result, reason

    def answer(self, payload: bytes, fallback_cls: int, fallback_confidence_q15: int = 0,
               cut: int = protocol.RAW_INPUT_CUT, codec: int = protocol.CODEC_RAW, codec_params: bytes = b"") -> Answer:
        """Exactly one answer for a sample: the edge's, else the device's own final exit (`fallback_cls`)."""
        self.stats.samples += 1
        reply, reason = self.request(payload, cut, codec, codec_params)
        if reply is not None:
            if reply.source == protocol.SOURCE_CACHE:
                self.stats.answered_cache += 1
            else:
                self.stats.answered_edge += 1
            return Answer(reply.cls, protocol.SOURCE_NAMES.get(reply.source, "edge"), reply.confidence_q15,
                          reply.worker_id)
        self.stats.fallbacks += 1
        if reason == "offline":
            self.stats.fallback_offline += 1
        elif reason.startswith("refused"):
            self.stats.fallback_refused += 1
        else:
            self.stats.fallback_timeout += 1
        return Answer(fallback_cls, "device", fallback_confidence_q15, reason=reason)

    def set_load(self, load: float) -> None:
        self.member.load = float(load)
        if self.connected:
            registry.publish(self.client, self.fleet, self.member)

    def peers(self, timeout: float = 2.0) -> list[protocol.Member]:
        return registry.read(self.url, self.fleet, timeout=timeout)

    def close(self) -> None:
        if self.connected:
            try:
                registry.clear(self.client, self.fleet, self.device_id).wait_for_publish(1.0)
            except (RuntimeError, ValueError):
                pass  # the broker went away meanwhile: the will clears the record
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
