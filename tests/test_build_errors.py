"""Failed firmware builds end in one sentence that names the cause: the memory region that overflowed, by how
many bytes, against the linker script's memory map and the board's YAML; or the first compiler error with
its file and line. Not "collect2: error: ld returned 1 exit status"."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tinyexit.errors import TinyexitError
from tinyexit.firmware_build import FIRMWARE, TARGETS, build, failure_summary, memory_regions


@pytest.fixture(scope="module")
def too_big_for_ram(tmp_path_factory):
    """A 256 kB input widened to a 4 MB activation by a 1x1 convolution: more than MPS2's 4 MB of SRAM."""
    import keras
    from keras import layers

    from tinyexit.export import convert_int8

    keras.utils.set_random_seed(0)
    inp = keras.Input((256, 256, 4))
    x = layers.MaxPooling2D(32)(layers.Conv2D(64, 1, activation="relu")(inp))
    model = keras.Model(inp, layers.Dense(2)(layers.Flatten()(x)))
    path = tmp_path_factory.mktemp("too_big") / "too_big.tflite"
    path.write_bytes(convert_int8(model, np.random.default_rng(0).normal(size=(2, 256, 256, 4)).astype(np.float32)))
    return path


def test_ram_overflow_names_the_region_and_the_excess(too_big_for_ram, tmp_path):
    proc = run_cli("build", str(too_big_for_ram), "--target", "qemu-m4", "--out", str(tmp_path), timeout=300)
    assert_one_line_error(proc, "firmware build failed for qemu-m4: the model needs ", " bytes more RAM than the "
                          "4 MB region 'RAM' holds (arena 4,", f"log: {tmp_path / 'build.log'})")
    line = proc.stderr.strip().splitlines()[-1]
    excess = int(re.search(r"needs ([\d,]+) bytes", line).group(1).replace(",", ""))
    log = (tmp_path / "build.log").read_text()
    assert f"region `RAM' overflowed by {excess} bytes" in log  # the linker's own figure
    assert "collect2" not in line


def test_board_overflow_is_measured_against_its_yaml(too_big_for_ram, tmp_path):
    with pytest.raises(TinyexitError) as err:
        build(too_big_for_ram, "nucleo-l4r5zi", tmp_path)
    assert re.search(r"firmware build failed for nucleo-l4r5zi: the model needs [\d,]+ bytes more RAM than the "
                     r"640 kB region 'RAM' holds \(nucleo-l4r5zi has 655,360 bytes of RAM in "
                     r"boards/nucleo-l4r5zi.yaml; arena ", str(err.value)), str(err.value)


def test_flash_overflow_on_a_board_whose_port_links_less_than_it_has():
    """The linker's words as GNU ld 2.40 prints them (a real flash overflow takes a megabyte of weights to
    compile); the H7 port links its data into the 128 kB DTCM of the board's 1.4 MB of RAM."""
    stderr = ("/usr/bin/arm-none-eabi-ld: firmware.elf section `.text' will not fit in region `FLASH'\n"
              "/usr/bin/arm-none-eabi-ld: region `FLASH' overflowed by 123456 bytes\n"
              "/usr/bin/arm-none-eabi-ld: region `RAM' overflowed by 2048 bytes\n"
              "collect2: error: ld returned 1 exit status\n")
    plan = {"board": "nucleo-h7a3zi-q", "compiler": "arm-none-eabi-g++", "link": TARGETS["nucleo-h7a3zi-q"]["link"]}
    assert failure_summary(stderr, plan, log="b.log") == (
        "the model needs 123,456 bytes more flash than the 2 MB region 'FLASH' holds and 2,048 bytes more RAM than "
        "the 128 kB region 'RAM' holds (nucleo-h7a3zi-q has 2,097,152 bytes of flash in boards/nucleo-h7a3zi-q.yaml; "
        "nucleo-h7a3zi-q has 1,441,792 bytes of RAM in boards/nucleo-h7a3zi-q.yaml, of which its port links "
        "131,072 into 'RAM'; log: b.log)")


def test_memory_maps_of_the_qemu_linker_scripts():
    assert memory_regions(FIRMWARE / "ports" / "qemu_mps2" / "mps2.ld") == {"FLASH": ("rx", 4 << 20),
                                                                             "RAM": ("rwx", 4 << 20)}
    assert memory_regions(FIRMWARE / "ports" / "qemu_mps3" / "mps3.ld")["RAM"] == ("rwx", 512 << 10)
    assert memory_regions(FIRMWARE / "ports" / "esp32s3" / "esp32s3.ld")["DRAM"] == ("rw", 0x3FCE0000 - 0x3FCA8000)


def test_compile_error_names_the_file_line_and_message(monkeypatch, tmp_path, datasets):
    """A generated model.cc that does not compile (as a codegen bug would make it)."""
    import tinyexit.codegen

    generate = tinyexit.codegen.generate

    def broken(model, out_dir):
        generated = generate(model, out_dir)
        source = generated.source.read_text()
        generated.source.write_text(source + "int broken_definition = undeclared_name;\n")
        return generated

    monkeypatch.setattr(tinyexit.codegen, "generate", broken)
    with pytest.raises(TinyexitError) as err:
        build(datasets / "models" / "mlperf_kws_ref_model_int8.tflite", "host", tmp_path)
    line_number = len((tmp_path / "model.cc").read_text().splitlines())
    assert str(err.value) == (f"firmware build failed for host: model.cc:{line_number}: error: 'undeclared_name' was "
                              f"not declared in this scope (log: {tmp_path / 'build.log'})")


def test_runtime_compile_error_names_the_firmware_file():
    stderr = ("arm-none-eabi-g++ -c /x/firmware/runtime/kernels/add_s8.cc\n"
              f"{FIRMWARE}/runtime/kernels/add_s8.cc:12:5: error: expected ';' before '}}' token\n")
    assert failure_summary(stderr) == "firmware/runtime/kernels/add_s8.cc:12: error: expected ';' before '}' token"
    missing = f"cc1plus: fatal error: {FIRMWARE}/runtime/kernels/gone_s8.cc: No such file or directory\n"
    assert failure_summary(missing) == "fatal error: firmware/runtime/kernels/gone_s8.cc: No such file or directory"
    undefined = ("/usr/bin/ld: /tmp/b/obj/model.o: in function `tx::run_model()':\n"
                 "model.cc:(.text+0x1c): undefined reference to `tx::mystery_s8()'\n"
                 "collect2: error: ld returned 1 exit status\n")
    assert failure_summary(undefined) == "model.cc:(.text+0x1c): undefined reference to `tx::mystery_s8()'"
