"""Makes examples/har-tiny/export: the model `pio run -e <env>` builds when no TINYEXIT_MODEL is given.

A deliberately tiny early-exit HAR network (three blocks of 8-16 channels, an exit after the first), trained
for two epochs on UCI HAPT (../shared/datasets, or $TINYEXIT_DATASETS) with the kit's own training, int8
export and exit calibration. It shows the mechanics of a first build, not accuracy: `tinyexit demo` trains
the real one.

    python examples/har-tiny/make_example.py          # ~1 minute on 2 cores; rewrites export/
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tinyexit import pipeline
from tinyexit.models import Block, ModelSpec
from tinyexit.train import train

HERE = Path(__file__).resolve().parent
EPOCHS = 2


def tiny_spec(ds) -> ModelSpec:
    blocks = [Block("conv", 8, (5, 1), (2, 2)),   # 128 -> 64
              Block("ds", 16, (5, 1), (2, 2)),    # 64 -> 32
              Block("ds", 16, (5, 1), (2, 2))]    # 32 -> 16
    return ModelSpec(ds.task, list(ds.classes), tuple(ds.train.x.shape[1:]), blocks, exits_after=[1], exit_width=8,
                     exit_kernel=(5, 1), preprocessing=ds.preprocessing)


def main() -> int:
    ds = pipeline.load_data("har", None)
    spec = tiny_spec(ds)
    spec.validate()
    model = train(spec, ds, epochs=EPOCHS, seed=0, verbose=2)
    export = HERE / "export"
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "export"
        pipeline.export(model, spec, ds, staged)
        # the threshold lives in the manifest; the sweep's tables and plot stay out of the repository
        pipeline.calibrate(staged, ds, budget_pp=1.0, out_dir=Path(tmp) / "sweep", progress=False)
        shutil.rmtree(export, ignore_errors=True)
        shutil.copytree(staged, export)
    sizes = ", ".join(f"{p.name} {p.stat().st_size:,} B" for p in sorted(export.iterdir()))
    print(f"wrote {export}: {sizes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
