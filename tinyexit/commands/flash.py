"""`tinyexit flash`: generate the model into the board's PlatformIO build and upload it."""

HELP = ("build the firmware with the model for a board (PlatformIO env of boards/NAME.yaml) and upload it: "
        "runs `pio run -e <env> -t upload`")


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="export folder (manifest.json + stages) or a .tflite file")
    p.add_argument("--board", required=True, metavar="NAME", help="a board of boards/*.yaml (e.g. nucleo-l4r5zi)")
    p.add_argument("--port", metavar="PORT", help="upload port, where the board's upload tool needs one")
    p.add_argument("--build-only", action="store_true", help="build, do not upload")


def run(args) -> int:
    import os
    import shutil
    import subprocess
    from pathlib import Path

    from tinyexit import boards
    from tinyexit.commands import warn_if_uncalibrated
    from tinyexit.errors import TinyexitError
    from tinyexit.paths import pio_project

    board = boards.load(args.board)
    model = Path(args.model)
    if not model.exists():
        raise TinyexitError(f"{model}: no such export folder or .tflite file")
    warn_if_uncalibrated(model)
    pio = shutil.which("pio") or shutil.which("platformio")
    if pio is None:
        raise TinyexitError("PlatformIO's `pio` not found: run ./setup.sh (pip install platformio, then "
                            "pio/bootstrap.py for offline builds)")
    env = dict(os.environ, TINYEXIT_MODEL=str(model.resolve()), PLATFORMIO_DISABLE_UPGRADE_CHECK="true",
               PLATFORMIO_SETTING_ENABLE_TELEMETRY="No")
    # PlatformIO runs in the user's folder: its platformio.ini, or one written there naming the kit's platform
    cmd = [pio, "run", "-d", str(pio_project(Path.cwd())), "-e", board.pio_env]
    if not args.build_only:
        cmd += ["-t", "upload"]
        if args.port:
            cmd += ["--upload-port", args.port]
    print("$ TINYEXIT_MODEL=" + env["TINYEXIT_MODEL"] + " " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [l.strip() for l in (proc.stderr + "\n" + proc.stdout).splitlines() if l.strip()]
        ours = [l for l in lines if l.startswith("tinyexit: error: ")]
        errors = ours or [l for l in lines if "error" in l.lower()] or lines or ["?"]
        raise TinyexitError(f"pio run -e {board.pio_env} failed: {errors[0].replace('tinyexit: error: ', '')}")
    print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "done")
    return 0
