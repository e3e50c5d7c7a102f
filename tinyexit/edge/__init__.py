"""Device -> edge cascade: an edge service on an MQTT broker answers what a device's exits could not settle.

Modules: broker (private mosquitto / reachability), protocol (message formats), registry (retained member
records, peer choice), cache (intermediate-result cache: SQLite or Redis), worker (one serving process),
service (`tinyexit edge serve`), client (the device side: request, deadline, de-duplication, fallback).

MQTT topics (FLEET = --fleet, default "default"; ids are one topic level: 1-64 bytes, no / + #, no leading $):
  tinyexit/FLEET/requests             device -> edge, QoS 1. Workers subscribe through the shared subscription
                                      $share/tinyexit-edge-FLEET/tinyexit/FLEET/requests: the broker hands each
                                      request to one worker (mosquitto >= 2, MQTT 5 or 3.1.1).
  tinyexit/FLEET/replies/DEVICE_ID    edge -> that device, QoS 1.
  tinyexit/FLEET/registry/MEMBER_ID   retained JSON record of a device or worker; its last will (and a clean
                                      goodbye) is an empty retained message on the same topic, which deletes it.

Request (binary, little-endian; struct "<3sBbBHI32sBHI", 51 bytes, then variable parts, then CRC):
  "TXQ" | version u8 (=1) | cut i8 (stage whose features are sent; -1 = the raw model input) | codec u8
  (0 raw int8 in C order, 1 lossless, 2 requant 4-bit, 3 requant 2-bit: tinyexit.edge.codec / tx::codec)
  | flags u16 (0) | request id u32 | model sha256
  (32 bytes: the firmware's INFO hash, tinyexit.codegen.model_hash) | device id length u8 | codec params
  length u16 | payload length u32 || device id (UTF-8) || codec params || payload || CRC-32 u32 of all before.
  Codec params: empty (the cut tensor's zero point from the manifest, shift 0, unsigned codes) or 3 bytes:
  zero point i8, shift i8, flags u8 (bit 0: signed codes). The payload must decode to exactly the cut
  tensor's size using all its bytes.
Reply (binary; struct "<3sBBBI32shHBH", 49 bytes, then variable parts, then CRC):
  "TXR" | version u8 | status u8 (0 ok, 1 unknown model hash, 2 bad request, 3 edge error) | source u8 (0 edge
  computed it, 1 from the cache) | request id u32 | model sha256 (32) | class i16 | confidence Q15 u16 (the
  final exit's max-prob test, or the edge model's top probability) | worker id length u8 | message length u16
  || worker id || message (UTF-8, errors) || CRC-32 u32.
  A damaged request whose header still names the device (and request id) gets status 2 at once, so the
  device falls back without waiting for its deadline; one that does not is dropped. Every frame is length-
  and CRC-checked: a device that disconnects mid-frame leaves a truncated frame, which is refused, never run.
Registry record (JSON): {"version": 1, "id", "role": "device"|"worker", "board", "model_hash" (hex),
  "capabilities": {"core", "clock_mhz", "flash_kb", "ram_kb", "ops" (optional list), ...}, "load" (0..1),
  "last_seen" (unix s), "pid"}. Workers refresh theirs every 2 s.
Device rules (tinyexit.edge.client): one request in flight; the reply must name the awaited request id and
  the device's model hash; anything else is dropped and counted; no valid reply by the deadline, an error
  reply or no broker -> the device's own final exit answers (a fallback). Every sample gets one answer.
"""
