"""Host side of the serial protocol (firmware/include/tinyexit/protocol.h), over any pyserial URL:
`socket://127.0.0.1:P` (host build, QEMU), `/dev/ttyACM0` (boards), `loop://` (tests)."""

from __future__ import annotations

import contextlib
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyexit.errors import TinyexitError

SYNC, VERSION, REPLY, ERROR = 0xA5, 3, 0x80, 0x7F
INFO, INFER, SET_POLICY, PROFILE, BATCH = 0x01, 0x02, 0x03, 0x04, 0x05
SET_OFFLOAD, RESUME = 0x06, 0x07
ERRORS = {1: "bad checksum", 2: "oversized frame", 3: "unknown command", 4: "wrong input size",
          5: "bad version", 6: "truncated frame", 7: "bad argument", 8: "unsupported", 9: "file error"}
NO_BATCH = (3, 8)  # BATCH answered "unknown command" (firmware built before it) or "unsupported" (no files)
BATCH_INPUTS, BATCH_RESULTS = "tx_batch_in.bin", "tx_batch_out.bin"  # in the firmware's working folder


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def frame(command: int, payload: bytes = b"", version: int = VERSION) -> bytes:
    body = struct.pack("<BBH", version, command, len(payload)) + payload
    return bytes([SYNC]) + body + struct.pack("<H", crc16(body))


class DeviceError(TinyexitError):
    def __init__(self, command: int, code: int):
        self.command, self.code = command, code
        super().__init__(f"device answered command 0x{command:02x} with error {code} ({ERRORS.get(code, 'unknown')})")


@dataclass
class Inference:
    exit: int
    predicted_class: int
    confidence_q15: int
    stage_cycles: list[int]
    output: np.ndarray | None
    layer_cycles: list[int] | None = None
    outputs: list[np.ndarray] | None = None  # every output of the last stage run (all_outputs=True), int8
    offload: Offload | None = None  # the device stopped at `exit` and sent this for the edge


@dataclass
class Offload:
    """What an offloading device sent: the encoded cut (cut -1: the model input; k: stage k's features)."""
    cut: int
    codec: int           # tinyexit.edge.codec kind (0 raw)
    values: int          # int8 values in the cut tensor
    encode_cycles: int   # included in the stage's cycles
    data: bytes


@dataclass(frozen=True)
class OffloadSetting:
    """One exit's offload setting (SET_OFFLOAD): offload a sample the exit does not take (the final exit: takes)
    and scores below `below_q15` (32769: always)."""
    enabled: bool
    cut: int = -1
    codec: int = 0
    zero_point: int = 0
    shift: int = 0
    signed_codes: bool = False
    below_q15: int = 32769


class Device:
    """A firmware speaking the protocol on a pyserial-like object (read(n), write(b)). files: the firmware
    process's working folder, where BATCH reads inputs and writes results (host build, QEMU); None: no
    shared files (a board), one INFER per sample only."""

    def __init__(self, link, timeout: float = 30.0, files: Path | None = None):
        self.link = link
        self.timeout = timeout
        self.files = Path(files) if files is not None else None

    def _read(self, n: int) -> bytes:
        data = b""
        deadline = time.monotonic() + self.timeout
        while len(data) < n:
            chunk = self.link.read(n - len(data))
            if chunk:
                data += chunk
            elif time.monotonic() > deadline:
                raise TinyexitError(f"device did not answer within {self.timeout:g} s")
        return data

    def read_frame(self) -> tuple[int, bytes]:
        while self._read(1)[0] != SYNC:
            pass
        head = self._read(4)
        version, command, size = struct.unpack("<BBH", head)
        payload = self._read(size)
        (crc,) = struct.unpack("<H", self._read(2))
        if crc16(head + payload) != crc:
            raise TinyexitError("reply with a bad checksum (serial link corrupted?)")
        return command, payload

    def request(self, command: int, payload: bytes = b"") -> bytes:
        self.link.write(frame(command, payload))
        reply, body = self.read_frame()
        if reply == ERROR:
            raise DeviceError(body[0], body[1])
        if reply != command | REPLY:
            raise TinyexitError(f"unexpected reply 0x{reply:02x} to command 0x{command:02x}")
        return body

    def info(self) -> dict:
        try:
            b = self.request(INFO)
        except DeviceError as err:
            if err.code == 5:
                raise TinyexitError(f"the firmware speaks another protocol version than this tinyexit ({VERSION}): "
                                    f"rebuild and flash it with this tinyexit") from None
            raise
        version = b[0]
        task = b[1:17].rstrip(b"\0").decode()
        sha = b[17:49].hex()
        stages, exits, arena, input_size, layers, macs = struct.unpack("<BBIIHQ", b[49:69])
        n_inputs = b[101]
        input_sizes = list(struct.unpack(f"<{n_inputs}I", b[102:102 + 4 * n_inputs]))
        end = 103 + 4 * n_inputs
        stack_used = struct.unpack("<I", b[end:end + 4])[0] if len(b) >= end + 4 else 0  # 0: not measured
        return {"version": version, "task": task, "sha256": sha, "stages": stages, "exits": exits,
                "arena_bytes": arena, "input_bytes": input_size, "layers": layers, "macs": macs,
                "port": b[69:85].rstrip(b"\0").decode(), "cycle_unit": b[85:101].rstrip(b"\0").decode(),
                "input_sizes": input_sizes, "outputs": b[102 + 4 * n_inputs], "stack_used": stack_used}

    def infer(self, x: np.ndarray | list[np.ndarray], with_output: bool = True, profile: bool = False,
              all_outputs: bool = False, may_offload: bool = False) -> Inference:
        """x: one sample, or one array per model input (sent one after the other). may_offload: an exit
        set for offload (set_offload) that is not confident stops the run and returns `offload`."""
        parts = x if isinstance(x, (list, tuple)) else [x]
        data = b"".join(np.asarray(p, np.int8).tobytes() for p in parts)
        flags = (1 if with_output else 0) | (2 if all_outputs else 0) | (4 if may_offload else 0)
        return self._parse_run(self.request(PROFILE if profile else INFER, bytes([flags]) + data), profile,
                               all_outputs)

    def resume(self, with_output: bool = True) -> Inference:
        """The device's own answer for the sample it just offloaded (runs the stages after the cut)."""
        return self._parse_run(self.request(RESUME, bytes([1 if with_output else 0])), False, False)

    def set_offload(self, settings: dict[int, OffloadSetting]) -> None:
        """Per early exit: offload or not, the cut and its codec (all off after reset)."""
        self.request(SET_OFFLOAD, b"".join(
            struct.pack("<BBbBbBBH", e, int(s.enabled), s.cut, s.codec, s.zero_point, s.shift, int(s.signed_codes),
                        s.below_q15)
            for e, s in settings.items()))

    @staticmethod
    def _parse_run(body: bytes, profile: bool, all_outputs: bool) -> Inference:
        exit_, cls, conf, stages = struct.unpack("<BBHB", body[:5])
        cycles = list(struct.unpack(f"<{stages}I", body[5:5 + 4 * stages]))
        pos = 5 + 4 * stages
        (size,) = struct.unpack("<H", body[pos:pos + 2])
        output = np.frombuffer(body[pos + 2:pos + 2 + size], np.int8).copy() if size else None
        pos += 2 + size
        layer_cycles = None
        if profile:
            (n,) = struct.unpack("<H", body[pos:pos + 2])
            layer_cycles = list(struct.unpack(f"<{n}I", body[pos + 2:pos + 2 + 4 * n]))
            pos += 2 + 4 * n
        outputs = None
        if all_outputs:
            outputs, count, pos = [], body[pos], pos + 1
            for _ in range(count):
                (size,) = struct.unpack("<H", body[pos:pos + 2])
                outputs.append(np.frombuffer(body[pos + 2:pos + 2 + size], np.int8).copy())
                pos += 2 + size
        offload = None
        if body[pos]:
            cut, codec, values, encode_cycles, size = struct.unpack("<bBIIH", body[pos + 1:pos + 13])
            offload = Offload(cut, codec, values, encode_cycles, bytes(body[pos + 13:pos + 13 + size]))
        return Inference(exit_, cls, conf, cycles, output, layer_cycles, outputs, offload)

    def write_batch_inputs(self, xs: list[np.ndarray]) -> None:
        """The samples BATCH reads: xs holds one int8 array per model input, N samples each; written as N
        records of every input's bytes one after the other (as INFER takes them)."""
        if self.files is None:
            raise TinyexitError("this device shares no files with the host: BATCH is for host builds and QEMU")
        flat = [np.ascontiguousarray(a, np.int8).reshape(len(a), -1) for a in xs]
        samples = np.concatenate(flat, axis=1) if len(flat) > 1 else flat[0]
        samples.tofile(self.files / BATCH_INPUTS)

    def batch(self, first: int, count: int, with_output: bool = True, profile: bool = False,
              all_outputs: bool = False, seconds_per_sample: float | None = None) -> list[Inference]:
        """Samples first .. first+count-1 of the input file (write_batch_inputs) through BATCH: each runs as
        INFER (PROFILE) runs it, results come back through a file. Raises DeviceError with a code in NO_BATCH
        if the firmware cannot (older build, a port without files). seconds_per_sample: expected time, to
        bound the wait for the reply (default: this device's timeout per sample)."""
        if self.files is None:
            raise DeviceError(BATCH, 8)
        results = self.files / BATCH_RESULTS
        flags = (1 if with_output else 0) | (2 if all_outputs else 0) | (8 if profile else 0)
        payload = (struct.pack("<BII", flags, first, count) + BATCH_INPUTS.encode() + b"\0"
                   + BATCH_RESULTS.encode() + b"\0")
        wait = self.timeout * count if seconds_per_sample is None else self.timeout + 10 * count * seconds_per_sample
        saved, self.timeout = self.timeout, wait
        try:
            body = self.request(BATCH, payload)
        finally:
            self.timeout = saved
        done, size = struct.unpack("<II", body[:8])
        data = results.read_bytes()
        if done != count or len(data) != size:
            raise TinyexitError(f"BATCH ran {done} of {count} samples and wrote {len(data)} of {size} result bytes")
        runs, pos = [], 0
        while pos < len(data):
            (n,) = struct.unpack("<I", data[pos:pos + 4])
            runs.append(self._parse_run(data[pos + 4:pos + 4 + n], profile, all_outputs))
            pos += 4 + n
        if len(runs) != count:
            raise TinyexitError(f"BATCH wrote {len(runs)} result records for {count} samples")
        return runs

    def set_policy(self, thresholds: dict[int, int]) -> None:
        self.request(SET_POLICY, b"".join(struct.pack("<BH", e, t) for e, t in thresholds.items()))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect(port: int, proc: subprocess.Popen, what: str, wait: float = 10.0):
    import serial

    deadline = time.monotonic() + wait
    while True:
        try:
            return serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=1.0)
        except serial.SerialException:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().strip().splitlines() if proc.poll() is not None else []
                raise TinyexitError(f"{what} did not open its serial port: {err[-1] if err else 'timed out'}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def firmware(target: str, binary: Path, timeout: float = 60.0):
    """Start a firmware build (host process or QEMU), yield a connected Device, and always stop it:
    on normal exit, on errors and on Ctrl-C. The process runs in a temporary folder of its own, the
    Device's `files` (BATCH's input and result files)."""
    import tempfile

    binary = Path(binary).resolve()  # the process starts in its own folder
    if target == "host":
        cmd = [str(binary), "--port", "0"]
        what = str(binary)
    else:
        import shutil

        from tinyexit import sim_targets

        emulated = sim_targets.load(target)  # sim/<target>.yaml: machine and QEMU options
        qemu = shutil.which("qemu-system-arm")
        if qemu is None:
            raise TinyexitError("qemu-system-arm not found: run ./setup.sh")
        port = _free_port()
        cmd = emulated.qemu_command(qemu, binary, port)
        what = f"QEMU ({target})"
    files = tempfile.TemporaryDirectory(prefix="tinyexit-fw-")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=files.name)
    except BaseException:
        files.cleanup()
        raise
    try:
        if target == "host":  # the host build picks a free port and says which
            line = proc.stderr.readline()
            if not line.startswith("PORT "):
                raise TinyexitError(f"{binary} did not start: {line.strip() or 'no output'}")
            port = int(line.split()[1])
        link = _connect(port, proc, what)
        try:
            yield Device(link, timeout, Path(files.name))
        finally:
            link.close()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
        files.cleanup()


def host_firmware(binary: Path, timeout: float = 30.0):
    """A host build as a connected Device (see `firmware`)."""
    return firmware("host", binary, timeout)
