"""The edge protocol's messages: binary requests and replies (struct), JSON registry entries, topic names.

See tinyexit/edge/__init__.py for the layout in words. Every parser raises ProtocolError (a ValueError)
with one sentence on anything it cannot trust: short or long frames, bad magic or version, a CRC that
does not match (a device that dropped off mid-frame), lengths that point outside the frame.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field

from tinyexit.errors import TinyexitError

VERSION = 1
REQUEST_MAGIC = b"TXQ"
REPLY_MAGIC = b"TXR"

# codec kinds (tinyexit/edge/codec.py implements the others; 0 needs no library)
CODEC_RAW = 0
RAW_INPUT_CUT = -1  # cut index of a request that carries the model's raw int8 input

# reply status
OK, UNKNOWN_MODEL, BAD_REQUEST, EDGE_ERROR = 0, 1, 2, 3
STATUS_NAMES = {OK: "ok", UNKNOWN_MODEL: "unknown model", BAD_REQUEST: "bad request", EDGE_ERROR: "edge error"}
# where an answer came from
SOURCE_EDGE, SOURCE_CACHE = 0, 1
SOURCE_NAMES = {SOURCE_EDGE: "edge", SOURCE_CACHE: "cache"}

# request: magic, version, cut, codec, flags, request id, model sha256, device id length, codec params length,
# payload length; then device id (utf-8), codec params, payload; then CRC-32 of everything before it
_REQUEST = struct.Struct("<3sBbBHI32sBHI")
# reply: magic, version, status, source, request id, model sha256, class, confidence (Q15), worker id length,
# message length; then worker id, message (utf-8); then CRC-32
_REPLY = struct.Struct("<3sBBBI32shHBH")
_CRC = struct.Struct("<I")
MAX_ID = 64  # device and worker ids: bytes, and a single MQTT topic level


class ProtocolError(TinyexitError, ValueError):
    pass


def topic_requests(fleet: str) -> str:
    return f"tinyexit/{fleet}/requests"


def topic_shared_requests(fleet: str) -> str:
    """Workers subscribe here: the broker hands each request to one member of the group (MQTT 5 / mosquitto 2)."""
    return f"$share/tinyexit-edge-{fleet}/{topic_requests(fleet)}"


def topic_reply(fleet: str, device_id: str) -> str:
    return f"tinyexit/{fleet}/replies/{device_id}"


def topic_registry(fleet: str, member_id: str = "+") -> str:
    return f"tinyexit/{fleet}/registry/{member_id}"


def check_id(text: str, what: str = "id") -> str:
    raw = text.encode()
    if not raw or len(raw) > MAX_ID or any(c in text for c in "/+#\0") or text.startswith("$"):
        raise ProtocolError(f"{what} must be 1-{MAX_ID} bytes without / + # or a leading $, not {text!r}")
    return text


@dataclass
class Request:
    request_id: int
    device_id: str
    model_hash: bytes  # 32 bytes: the firmware's INFO sha256 (tinyexit.codegen.model_hash)
    cut: int  # index of the stage whose features are sent; -1 = the raw input
    codec: int
    payload: bytes
    codec_params: bytes = b""

    def encode(self) -> bytes:
        device = check_id(self.device_id, "device id").encode()
        if len(self.model_hash) != 32:
            raise ProtocolError("model hash must be 32 bytes (sha256)")
        head = _REQUEST.pack(REQUEST_MAGIC, VERSION, self.cut, self.codec, 0, self.request_id & 0xFFFFFFFF,
                             self.model_hash, len(device), len(self.codec_params), len(self.payload))
        body = head + device + self.codec_params + self.payload
        return body + _CRC.pack(zlib.crc32(body))


def _check_frame(data: bytes, magic: bytes, head: struct.Struct, what: str):
    if len(data) < head.size + _CRC.size:
        raise ProtocolError(f"{what} of {len(data)} bytes is shorter than its header")
    fields = head.unpack_from(data)
    if fields[0] != magic:
        raise ProtocolError(f"{what} does not start with {magic!r}")
    if fields[1] != VERSION:
        raise ProtocolError(f"{what} has protocol version {fields[1]}; this side speaks {VERSION}")
    return fields


def _check_crc(data: bytes, end: int, what: str) -> None:
    if len(data) != end + _CRC.size:
        raise ProtocolError(f"{what} is {len(data)} bytes; its header announces {end + _CRC.size}")
    if zlib.crc32(data[:end]) != _CRC.unpack_from(data, end)[0]:
        raise ProtocolError(f"{what} fails its CRC (truncated or garbled)")


def peek_header(data: bytes) -> tuple[str, int, bytes] | None:
    """(device id, request id, model hash) of a request that may be damaged, when its header still says them,
    so the device can be told at once instead of waiting for its deadline."""
    try:
        fields = _check_frame(data, REQUEST_MAGIC, _REQUEST, "request")
        n = fields[7]
        if len(data) < _REQUEST.size + n:
            return None
        return check_id(data[_REQUEST.size:_REQUEST.size + n].decode(), "device id"), fields[5], fields[6]
    except (ProtocolError, UnicodeDecodeError):
        return None


def parse_request(data: bytes) -> Request:
    _, _, cut, codec, _, request_id, model_hash, n_device, n_params, n_payload = _check_frame(
        data, REQUEST_MAGIC, _REQUEST, "request")
    end = _REQUEST.size + n_device + n_params + n_payload
    _check_crc(data, end, "request")
    p = _REQUEST.size
    try:
        device = check_id(data[p:p + n_device].decode(), "device id")
    except UnicodeDecodeError:
        raise ProtocolError("request device id is not UTF-8") from None
    p += n_device
    params = data[p:p + n_params]
    p += n_params
    return Request(request_id, device, model_hash, cut, codec, data[p:p + n_payload], params)


@dataclass
class Reply:
    request_id: int
    model_hash: bytes
    status: int = OK
    cls: int = -1
    confidence_q15: int = 0
    source: int = SOURCE_EDGE
    worker_id: str = ""
    message: str = ""

    def encode(self) -> bytes:
        worker = self.worker_id.encode()[:255]
        message = self.message.encode()[:1024]
        body = _REPLY.pack(REPLY_MAGIC, VERSION, self.status, self.source, self.request_id & 0xFFFFFFFF,
                           self.model_hash, self.cls, self.confidence_q15, len(worker), len(message))
        body += worker + message
        return body + _CRC.pack(zlib.crc32(body))

    @property
    def ok(self) -> bool:
        return self.status == OK


def parse_reply(data: bytes) -> Reply:
    _, _, status, source, request_id, model_hash, cls, conf, n_worker, n_message = _check_frame(
        data, REPLY_MAGIC, _REPLY, "reply")
    end = _REPLY.size + n_worker + n_message
    _check_crc(data, end, "reply")
    p = _REPLY.size
    worker = data[p:p + n_worker].decode(errors="replace")
    message = data[p + n_worker:end].decode(errors="replace")
    return Reply(request_id, model_hash, status, cls, conf, source, worker, message)


@dataclass
class Member:
    """A registry entry: a device or an edge worker, as its retained message says."""
    id: str
    role: str  # "device" | "worker"
    board: str = ""
    model_hash: str = ""  # hex
    capabilities: dict = field(default_factory=dict)  # core, clock_mhz, flash_kb, ram_kb, ops, ...
    load: float = 0.0  # share of time busy (0..1) or requests in flight
    last_seen: float = 0.0  # unix time of the last update
    pid: int | None = None

    def encode(self) -> bytes:
        return json.dumps({"version": VERSION, **self.__dict__}, sort_keys=True).encode()

    @staticmethod
    def parse(data: bytes) -> "Member":
        try:
            d = json.loads(data)
            return Member(str(d["id"]), str(d["role"]), str(d.get("board", "")), str(d.get("model_hash", "")),
                          dict(d.get("capabilities") or {}), float(d.get("load", 0.0)),
                          float(d.get("last_seen", 0.0)), d.get("pid"))
        except (ValueError, KeyError, TypeError) as err:
            raise ProtocolError(f"registry entry is not a member record ({str(err)[:80]})") from None

    def touch(self) -> "Member":
        self.last_seen = time.time()
        return self
