"""finetune.dtype = "auto": which dtype each machine gets, decided from facts given as arguments."""

from pathlib import Path

import pytest

from evalpipe.config import load_config
from evalpipe.gpt2 import runtime
from evalpipe.gpt2.runtime import DtypeChoice, choose_dtype, cpu_flags, finetune_dtype

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
bugs\t\t: sysret_ss_attrs

processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
"""


def test_cpu_flags_are_read_from_proc_cpuinfo_text():
    assert cpu_flags(CPUINFO) == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
    assert cpu_flags("") == frozenset()


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, DtypeChoice("bfloat16", "auto: the CPU has avx512_bf16")),
    ({"amx_tile", "amx_bf16"}, DtypeChoice("bfloat16", "auto: the CPU has amx_bf16")),
    ({"amx_bf16", "avx512_bf16"},
     DtypeChoice("bfloat16", "auto: the CPU has amx_bf16 and avx512_bf16")),
    # AVX-512 without its BF16 extension converts bf16 in software: slower than fp32.
    ({"avx2", "avx512f", "avx512_vnni"},
     DtypeChoice("float32", "auto: the CPU has no AVX-512 BF16 or AMX")),
    (set(), DtypeChoice("float32", "auto: the CPU has no AVX-512 BF16 or AMX")),
])
def test_auto_on_a_cpu_is_bfloat16_only_with_avx512_bf16_or_amx(flags, expected):
    assert choose_dtype("auto", "cpu", cpu_flags=frozenset(flags)) == expected


@pytest.mark.parametrize("capability, expected", [
    ((8, 0), DtypeChoice("bfloat16", "auto: the CUDA device (compute capability 8.0) computes "
                                     "in bf16")),
    ((9, 0), DtypeChoice("bfloat16", "auto: the CUDA device (compute capability 9.0) computes "
                                     "in bf16")),
    ((7, 5), DtypeChoice("float32", "auto: the CUDA device (compute capability 7.5, before 8.0) "
                                    "has no bf16 units")),
    (None, DtypeChoice("float32", "auto: the CUDA device (compute capability unknown, before "
                                  "8.0) has no bf16 units")),
])
def test_auto_on_cuda_is_bfloat16_from_ampere(capability, expected):
    # The CPU's flags do not matter when the GPU computes.
    assert choose_dtype("auto", "cuda", cuda_capability=capability,
                        cpu_flags=frozenset({"avx512_bf16"})) == expected


def test_auto_on_mps_and_unknown_devices_is_float32():
    assert choose_dtype("auto", "mps") == DtypeChoice(
        "float32", "auto: bf16 on MPS is not known to be faster")
    assert choose_dtype("auto", "xpu") == DtypeChoice(
        "float32", "auto: no known fast bf16 on 'xpu'")


def test_an_explicit_dtype_stands_whatever_the_machine():
    for setting in ("float32", "bfloat16"):
        expected = DtypeChoice(setting, f"finetune.dtype = {setting!r}")
        assert choose_dtype(setting, "cpu", cpu_flags=frozenset()) == expected
        assert choose_dtype(setting, "cpu", cpu_flags=frozenset({"amx_bf16"})) == expected
        assert choose_dtype(setting, "cuda", cuda_capability=(7, 0)) == expected


def test_the_default_is_auto_and_book_toml_stays_float32():
    assert load_config(None).finetune.dtype == "auto"
    assert load_config(Path(__file__).parents[2] / "configs/book.toml").finetune.dtype \
        == "float32"


def test_finetune_dtype_reads_this_machine_only_for_auto(monkeypatch):
    asked = []

    def flags():
        asked.append(True)
        return frozenset({"avx512_bf16"})

    monkeypatch.setattr(runtime, "this_cpu_flags", flags)
    config = load_config(None, ["finetune.device=cpu"])
    assert finetune_dtype(config) == DtypeChoice("bfloat16", "auto: the CPU has avx512_bf16")
    assert asked == [True]
    config = load_config(None, ["finetune.device=cpu", "finetune.dtype=float32"])
    assert finetune_dtype(config) == DtypeChoice("float32", "finetune.dtype = 'float32'")
    assert asked == [True]
