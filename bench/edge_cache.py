"""The edge's result cache on the real ordered HAR stream: hit rate, saved edge work, accuracy change.

    python bench/edge_cache.py [--export out/har/export] [--thresholds 0 0.02 0.05 0.1 0.2] [--mqtt] [--json out.json]

The HAR test subjects (2 4 9 10 12 13 18 20 24) are nine devices, each streaming its windows in time order
(50% overlap); the devices' streams are interleaved round-robin into one fleet-wide cache (SQLite, as `edge
serve` uses by default). Two streams are measured:
  - offload: what a device sends in the cascade: the cut features (stage 0's output) of every window whose
    early exit is not confident (the export's calibrated policy), the edge runs the remaining stages;
  - raw: every window's raw int8 input (cut -1, "always offload"), the edge runs the whole network.
For each near-duplicate threshold (0 = exact hits only): hit rate (exact / near), edge MACs saved (hits x the
MACs the edge would have run) and the edge's TFLite Micro time saved, and accuracy of the answers (the
cascade's, over every window, for the offload stream) with the cache against without it.
`--mqtt` also sends the offload stream through a real broker to `tinyexit edge serve`'s workers (2 worker
processes, shared subscription) and reports round-trip latency and where answers came from.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinyexit import manifest as mf  # noqa: E402
from tinyexit.edge.cache import SqliteCache  # noqa: E402
from tinyexit.edge.worker import EdgeModel  # noqa: E402
from tinyexit.paths import EXAMPLE_MODEL  # noqa: E402
from tinyexit.reference import decide, load_stages, quantize_input  # noqa: E402


def interleave(groups: np.ndarray) -> np.ndarray:
    """Indices of the samples, each group in its own (time) order, groups taken round-robin."""
    per = [np.flatnonzero(groups == g) for g in dict.fromkeys(groups.tolist())]
    order = []
    for k in range(max(len(p) for p in per)):
        order += [p[k] for p in per if k < len(p)]
    return np.asarray(order)


def device_side(manifest: dict, x_q: np.ndarray):
    """Per window: every exit's logits, stage 0's features and the exit the device's policy takes."""
    stages = load_stages(manifest)
    logits = [np.zeros((len(x_q), e["classes"]), np.int8) for e in manifest["exits"]]
    features = []
    for n in range(len(x_q)):
        outs = stages[0](x_q[n:n + 1])
        features.append(outs[0])
        f = outs[0]
        for e in manifest["exits"]:
            if e["stage"] == 0:
                logits[e["index"]][n] = outs[e["output"]].reshape(-1)
        for k in range(1, len(stages)):
            outs = stages[k](f)
            for e in manifest["exits"]:
                if e["stage"] == k:
                    logits[e["index"]][n] = outs[e["output"]].reshape(-1)
            f = outs[0]
    return logits, features, decide(manifest, logits)


def replay(model: EdgeModel, cut: int, tensors: list[np.ndarray], threshold: float, path: Path, min_conf: int = 0):
    """Send the stream through one cache; (answers, exact hits, near hits, edge seconds spent)."""
    path.unlink(missing_ok=True)
    answers, spent = [], 0.0
    zp = model.zero_point_of(cut)
    with SqliteCache(path, near_threshold=threshold if threshold > 0 else None, near_min_confidence_q15=min_conf) as cache:
        for t in tensors:
            hit = cache.get(model.hash, cut, t, zp)
            if hit is not None:
                answers.append(hit.cls)
                continue
            t0 = time.perf_counter()
            cls, conf = model.run(cut, t)
            spent += time.perf_counter() - t0
            cache.put(model.hash, cut, t, cls, conf, zp)
            answers.append(cls)
        return np.asarray(answers), cache.exact_hits, cache.near_hits, spent


def measure(model, manifest, cut, tensors, labels, base_pred, offload_idx, thresholds, tmp, min_confs=(0,)):
    """Rows of figures for one stream; accuracy over all windows with the offloaded ones' answers replaced."""
    macs_edge = manifest["cost"]["macs_all_stages"] - (0 if cut < 0 else manifest["cost"]["macs_to_exit"][cut])
    rows, reference = [], None
    for th, min_conf in [(t, c) for t in thresholds for c in (min_confs if t > 0 else (0,))]:
        answers, exact, near, spent = replay(model, cut, tensors, th, tmp / f"cache-{cut}-{th}.sqlite",
                                             round(min_conf * 32768))
        if reference is None:  # the first threshold must be 0: every answer computed (no near hits)
            reference, base_spent = answers, spent
        pred = base_pred.copy()
        pred[offload_idx] = answers
        hits = exact + near
        rows.append({"near_threshold": th, "near_min_confidence": min_conf, "requests": len(tensors), "exact_hits": exact, "near_hits": near,
                     "hit_rate": hits / len(tensors), "edge_macs_saved": hits * macs_edge,
                     "edge_macs_saved_share": hits / len(tensors),
                     "edge_seconds": round(spent, 3), "edge_seconds_without_cache": round(base_spent, 3),
                     "accuracy": float((pred == labels).mean()),
                     "answers_changed_by_cache": int((answers != reference).sum())})
    base = rows[0]["accuracy"]
    for r in rows:
        r["accuracy_change_pp"] = round(100 * (r["accuracy"] - base), 3)
    return rows


def through_mqtt(export: str, order: np.ndarray, feats: list[np.ndarray], fallback: np.ndarray, tmp: Path) -> dict:
    import threading

    from tinyexit.edge import service
    from tinyexit.edge.broker import PrivateBroker
    from tinyexit.edge.client import EdgeClient

    model = EdgeModel(export)
    with PrivateBroker() as b:
        stop = threading.Event()
        t = threading.Thread(target=service.serve, kwargs=dict(export=export, broker=b.url, workers=2,
                                                                cache=f"sqlite:{tmp / 'mqtt.sqlite'}", fleet="bench",
                                                                stop=stop), daemon=True)
        t.start()
        from tinyexit.edge import registry

        while sum(m.role == "worker" for m in registry.read(b.url, "bench", quiet=0.2)) < 2:
            time.sleep(0.3)
        lat, sources = [], {}
        with EdgeClient(b.url, "bench-device", model.hash, fleet="bench", deadline_s=2.0) as c:
            c.wait_connected(5)
            for i, f in zip(order, feats):
                t0 = time.perf_counter()
                a = c.answer(f.tobytes(), int(fallback[i]), cut=0)
                lat.append(time.perf_counter() - t0)
                sources[a.source] = sources.get(a.source, 0) + 1
        stop.set()
        t.join(30)
    lat_ms = np.asarray(lat) * 1e3
    return {"requests": len(lat), "latency_ms_median": round(float(np.median(lat_ms)), 2),
            "latency_ms_p95": round(float(np.percentile(lat_ms, 95)), 2), "sources": sources,
            "fallbacks": c.stats.fallbacks, "requests_per_s": round(len(lat) / float(np.sum(lat)), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", default="out/har/export",
                    help="a calibrated HAR export (default: out/har/export, what `tinyexit demo` writes; the shipped "
                         f"{EXAMPLE_MODEL.relative_to(EXAMPLE_MODEL.parents[2])} is trained for mechanics only)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0, 0.02, 0.05, 0.1, 0.2])
    ap.add_argument("--near-min-confidence", type=float, nargs="+", default=[0.0, 0.9], metavar="P",
                    help="near hits only from cached answers at least this confident (each value is a row)")
    ap.add_argument("--mqtt", action="store_true", help="also stream the offloads through a real broker")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    if args.thresholds[0] != 0:
        args.thresholds = [0.0, *args.thresholds]

    from tinyexit.data import load

    manifest = mf.read(args.export)
    if manifest["task"] != "har":
        raise SystemExit("bench/edge_cache.py: give a HAR export")
    test = load("har").test
    order = interleave(test.groups)
    x_q = quantize_input(manifest, test.x[order])
    labels = test.y[order]
    logits, feats, device = device_side(manifest, x_q)
    final = next(e for e in manifest["exits"] if e["final"])
    device_only = float((device.pred == labels).mean())
    offload_idx = np.flatnonzero(device.exit == final["index"])
    # the cascade offloads exactly the windows the device's early exits could not settle (those reaching the
    # final exit); the edge then runs the remaining stages on their cut: the same network, so the accuracy
    # without a cache equals device-only, and any change comes from the cache
    model = EdgeModel(args.export)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        offload = measure(model, manifest, 0, [feats[i] for i in offload_idx], labels, device.pred.copy(),
                          offload_idx, args.thresholds, tmp, args.near_min_confidence)
        everything = measure(model, manifest, -1, [x_q[n:n + 1] for n in range(len(x_q))], labels,
                             device.pred.copy(), np.arange(len(x_q)), args.thresholds, tmp, args.near_min_confidence)
        figures = {"export": args.export, "windows": len(labels), "devices": len(set(test.groups.tolist())),
                   "device_only_accuracy": device_only, "offload_rate": len(offload_idx) / len(labels),
                   "offload_stream": offload, "raw_stream": everything}
        if args.mqtt:
            figures["mqtt"] = through_mqtt(args.export, offload_idx, [feats[i] for i in offload_idx],
                                           device.pred, tmp)
    print(f"HAR test stream: {figures['windows']} windows from {figures['devices']} devices (time order, "
          f"interleaved), device-only accuracy {100 * device_only:.2f}%, offload rate {100 * figures['offload_rate']:.1f}%")
    for name, rows in (("offload (cut 0 features)", offload), ("raw inputs (cut -1)", everything)):
        print(f"\n{name}: {rows[0]['requests']} requests")
        print("threshold  min conf  hit rate  (exact/near)  edge MACs saved  edge s (no cache)  accuracy  change pp  answers changed")
        for r in rows:
            print(f"{r['near_threshold']:9.2f}  {r['near_min_confidence']:8.2f}  {100 * r['hit_rate']:7.1f}%  ({r['exact_hits']}/{r['near_hits']})"
                  f"  {r['edge_macs_saved']:>15,}  {r['edge_seconds']:.2f} ({r['edge_seconds_without_cache']:.2f})"
                  f"  {100 * r['accuracy']:7.2f}%  {r['accuracy_change_pp']:+8.2f}  {r['answers_changed_by_cache']}")
    if args.mqtt:
        print(f"\nthrough mosquitto, 2 workers: {json.dumps(figures['mqtt'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
