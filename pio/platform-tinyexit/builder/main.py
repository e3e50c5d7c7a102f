"""PlatformIO builder for tinyexit: asks tinyexit.firmware_build for the target's compiler, flags and
sources (the one list every build uses) after generating the model into the build folder, then compiles
and links with SCons. Project options: custom_tinyexit_target (a key of firmware_build.TARGETS; default: the env's name),
custom_tinyexit_model (export folder or .tflite; default $TINYEXIT_MODEL, else custom_tinyexit_default_model, the
example the repository ships) and custom_tinyexit_python (the Python that has tinyexit; default PlatformIO's)."""

import json
import os
import shlex
import subprocess
import sys

from SCons.Script import AlwaysBuild, Default, DefaultEnvironment  # pylint: disable=import-error

env = DefaultEnvironment()
platform = env.PioPlatform()
project_dir = env.subst("$PROJECT_DIR")
build_dir = env.subst("$BUILD_DIR")


def fail(message):
    sys.stderr.write(f"tinyexit: error: {message}\n")
    env.Exit(2)


def option(name, default=""):
    return env.GetProjectOption(name, default) or default


target = option("custom_tinyexit_target", env["PIOENV"])
model = option("custom_tinyexit_model") or os.environ.get("TINYEXIT_MODEL", "")
if not model and option("custom_tinyexit_default_model"):
    model = option("custom_tinyexit_default_model")
    print(f"tinyexit: no TINYEXIT_MODEL given: building the example model {model}")
if not model:
    fail("which model? set TINYEXIT_MODEL=MODEL (export folder or .tflite) or custom_tinyexit_model "
         "(`tinyexit flash --board NAME MODEL` does it for you)")
model = os.path.join(project_dir, os.path.expanduser(model))
python = option("custom_tinyexit_python") or env.subst("$PYTHONEXE")

# The package's toolchains first on PATH (Debian's arm-none-eabi through the symlinked package).
for package in ("toolchain-gccarmnoneeabi", "toolchain-xtensa-esp32s3"):
    package_dir = platform.get_package_dir(package)
    if package_dir and os.path.isdir(os.path.join(package_dir, "bin")):
        env.PrependENVPath("PATH", os.path.join(package_dir, "bin"))
        os.environ["PATH"] = os.path.join(package_dir, "bin") + os.pathsep + os.environ["PATH"]

child_env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [project_dir, os.environ.get("PYTHONPATH")])))
proc = subprocess.run([python, "-m", "tinyexit.firmware_build", "--print-build", target, "--model", model,
                       "--gen-dir", os.path.join(build_dir, "model")],
                      cwd=project_dir, env=child_env, capture_output=True, text=True)
if proc.returncode != 0:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    fail(lines[-1].replace("tinyexit: error: ", "") if lines else f"{python} -m tinyexit.firmware_build failed")
plan = json.loads(proc.stdout)

compiler = env.WhereIs(plan["compiler"]) or plan["compiler"]
flags = [shlex.quote(f) for f in plan["flags"]]  # SCons runs commands through the shell: keep -DX="..." quoted
env.Replace(CC=compiler, CXX=compiler, LINK=compiler, AS=compiler, CCFLAGS=[], CXXFLAGS=flags,
            CPPDEFINES=[], CPPPATH=[], LINKFLAGS=flags + [shlex.quote(f) for f in plan["link"]], LIBS=[], LIBPATH=[],
            PROGNAME="firmware", PROGSUFFIX=plan["suffix"],
            OBJCOPY=compiler.replace("g++", "objcopy"))



def object_name(source):
    """The source's path below the build folder (the generated model) or the kit's firmware folder, which
    may be a checkout's or an installed wheel's: kernels/x.cc and kernels/dsp/x.cc stay apart."""
    for base, prefix in ((build_dir, ""), (plan.get("firmware_dir", project_dir), "firmware")):
        relative = os.path.relpath(source, base)
        if not relative.startswith(".."):
            return os.path.join(prefix, relative)
    return os.path.basename(source)


def link_and_explain(sh, escape, cmd, args, spawn_env):  # pylint: disable=unused-argument
    """SCons's spawn for the link, keeping its output; a failed link also gets one `tinyexit: error:` line
    (which memory region overflowed and by how much), as `tinyexit build` says it."""
    proc = subprocess.run([sh, "-c", " ".join(args)], env={**spawn_env, "LC_ALL": "C"}, capture_output=True,
                          text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        log, plan_file = os.path.join(build_dir, "link.log"), os.path.join(build_dir, "plan.json")
        with open(log, "w") as f:
            f.write(" ".join(args) + "\n" + proc.stderr)
        with open(plan_file, "w") as f:
            json.dump(plan, f)
        explained = subprocess.run([python, "-m", "tinyexit.firmware_build", "--explain-failure", log, "--plan",
                                    plan_file], cwd=project_dir, env=child_env, capture_output=True, text=True)
        if explained.returncode == 0 and explained.stdout.strip():
            sys.stderr.write(f"tinyexit: error: firmware build failed for {target}: {explained.stdout.strip()}\n")
    return proc.returncode


objects = [env.Object(os.path.join(build_dir, "obj", object_name(source) + ".o"), source) for source in plan["sources"]]
program = env.Program(os.path.join(build_dir, "firmware" + plan["suffix"]), objects, SPAWN=link_and_explain)
Default(program)

# Upload: the board's commands from boards/<name>.yaml ({elf}, {bin}, {port} filled in here).
upload = plan.get("upload") or []
if upload:
    binary_image = env.Command(os.path.join(build_dir, "firmware.bin"), program,
                               env.VerboseAction("$OBJCOPY -O binary $SOURCE $TARGET", "Making $TARGET"))
    port = env.subst("$UPLOAD_PORT") or option("upload_port")
    commands = [[a.replace("{elf}", str(program[0].abspath)).replace("{bin}", str(binary_image[0].abspath))
                 .replace("{port}", port or "") for a in command] for command in upload]

    def run_upload(target, source, env):  # pylint: disable=unused-argument
        if any("{port}" in a for command in upload for a in command) and not port:
            sys.stderr.write("tinyexit: error: give the board's serial port: upload_port or --upload-port\n")
            return 2
        for command in commands:
            if env.WhereIs(command[0]) is None:
                sys.stderr.write(f"tinyexit: error: {command[0]} not found (needed to upload to {plan['board']})\n")
                return 2
            code = subprocess.call(command)
            if code != 0:
                return code
        return 0

    AlwaysBuild(env.Alias("upload", [program, binary_image],
                          env.Action(run_upload, " && ".join(" ".join(c) for c in commands))))
else:
    def no_upload(target, source, env):  # pylint: disable=unused-argument
        sys.stderr.write(f"tinyexit: error: {plan['target']} is not a board: nothing to upload "
                         "(run it with `tinyexit sim`)\n")
        return 2

    AlwaysBuild(env.Alias("upload", program, env.Action(no_upload, None)))
