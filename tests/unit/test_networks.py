"""networks.py: which network a worker serves, for every CPU class, artifact, device and request, and
how the CPU's flags are read. Pure: none of these depends on the machine that runs them."""

from __future__ import annotations

import itertools
from pathlib import Path

import networks
import pytest
from networks import INT8, INT8_REDUCE_RANGE, WEIGHTS_FILE, CpuFlags, choose, read_cpu_flags

BASE = "fpu sse sse2 ssse3 sse4_1 sse4_2 fma f16c"
CPUS = {
    # the classes of x86-64 machine we, CI and SageMaker's hosts have
    "avx2": CpuFlags(frozenset(f"{BASE} avx avx2".split()), "test"),  # AMD EPYC Zen 2/3, Haswell..Comet Lake
    "avx512": CpuFlags(frozenset(f"{BASE} avx avx2 avx512f avx512bw avx512vl".split()), "test"),  # Skylake-SP
    "avx512_vnni": CpuFlags(frozenset(f"{BASE} avx avx2 avx512f avx512bw avx512vl avx512_vnni".split()), "test"),
    "amx": CpuFlags(
        frozenset(f"{BASE} avx avx2 avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_int8 amx_bf16".split()),
        "test",
    ),  # Sapphire Rapids
    # AVX-VNNI without AVX-512 (Alder Lake): not the VNNI the full-range network is known safe with
    "avx_vnni": CpuFlags(frozenset(f"{BASE} avx avx2 avx_vnni".split()), "test"),
    "sse_only": CpuFlags(frozenset(BASE.split()), "test"),
    "unknown": CpuFlags(None, "/proc/cpuinfo has no flags line (not an x86 CPU?)"),
}
ARTIFACTS = {
    "both": {WEIGHTS_FILE, INT8.file, INT8_REDUCE_RANGE.file},
    "full-range only": {WEIGHTS_FILE, INT8.file},  # an artifact from before the reduce-range network
    "reduce-range only": {WEIGHTS_FILE, INT8_REDUCE_RANGE.file},
    "no int8": {WEIGHTS_FILE},
}
# What MODEL_PRECISION=int8 serves on a CPU with an artifact: the whole table, by hand.
INT8_ON_CPU = {
    ("avx2", "both"): "int8-reduce-range",
    ("avx2", "full-range only"): "fp32",
    ("avx2", "reduce-range only"): "int8-reduce-range",
    ("avx512", "both"): "int8-reduce-range",
    ("avx512", "full-range only"): "fp32",
    ("avx512", "reduce-range only"): "int8-reduce-range",
    ("avx512_vnni", "both"): "int8",
    ("avx512_vnni", "full-range only"): "int8",
    ("avx512_vnni", "reduce-range only"): "int8-reduce-range",
    ("amx", "both"): "int8",
    ("amx", "full-range only"): "int8",
    ("amx", "reduce-range only"): "int8-reduce-range",
    ("avx_vnni", "both"): "int8-reduce-range",
    ("avx_vnni", "full-range only"): "fp32",
    ("avx_vnni", "reduce-range only"): "int8-reduce-range",
}


@pytest.mark.parametrize(("cpu", "artifact"), list(itertools.product(CPUS, ARTIFACTS)))
@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("asked", ["int8", "fp16", "fp32", " INT8 "])
@pytest.mark.parametrize("int8_kernels", [True, False])
def test_every_combination_serves_the_fastest_safe_network(
    cpu: str, artifact: str, device: str, asked: str, int8_kernels: bool
) -> None:
    choice = choose(asked, device=device, cpu=CPUS[cpu], files=ARTIFACTS[artifact], int8_kernels=int8_kernels)
    asked = asked.strip().lower()
    if asked == "fp32":
        expected = "fp32"
    elif asked == "fp16":
        expected = "fp16" if device == "cuda" else "fp32"
    elif device == "cpu" and int8_kernels:
        expected = INT8_ON_CPU.get((cpu, artifact), "fp32")
    else:
        expected = "fp32"
    assert choice.precision == expected
    # the file it loads holds that network, and a fallback is flagged as one with its reason
    files = {"int8": INT8.file, "int8-reduce-range": INT8_REDUCE_RANGE.file}
    assert choice.file == files.get(expected, WEIGHTS_FILE)
    assert choice.fallback == (expected != asked and not expected.startswith(asked))
    assert choice.why


@pytest.mark.parametrize(
    ("cpu", "files", "asked", "device", "kernels", "reason"),
    [
        ("unknown", "both", "int8", "cpu", True, "instruction set is unknown (/proc/cpuinfo has no flags line"),
        ("sse_only", "both", "int8", "cpu", True, "no AVX2, which the int8 kernels need"),
        ("avx2", "full-range only", "int8", "cpu", True, "no AVX-512 VNNI, without which 8-bit weights times 8-bit"),
        ("avx2", "full-range only", "int8", "cpu", True, "the model has no model_int8_reduce_range.pt"),
        ("amx", "no int8", "int8", "cpu", True, "the model has no int8 network"),
        ("amx", "both", "int8", "cuda", True, "int8 kernels are for CPUs and this worker has cuda"),
        ("amx", "both", "int8", "cpu", False, "this torch has no x86 int8 kernels"),
        ("amx", "both", "fp16", "cpu", True, "fp16 is for GPUs and this worker has cpu"),
    ],
)
def test_a_fallback_says_why(cpu: str, files: str, asked: str, device: str, kernels: bool, reason: str) -> None:
    choice = choose(asked, device=device, cpu=CPUS[cpu], files=ARTIFACTS[files], int8_kernels=kernels)
    assert (choice.precision, choice.fallback) == ("fp32", True)
    assert reason in choice.why


def test_a_cpu_without_vnni_says_why_it_gets_the_reduce_range_network() -> None:
    choice = choose("int8", device="cpu", cpu=CPUS["avx512"], files=ARTIFACTS["both"])
    assert choice.precision == "int8-reduce-range" and not choice.fallback
    assert "model_int8_reduce_range.pt, safe with AVX2" in choice.why
    assert "not model_int8.pt: this CPU has no AVX-512 VNNI" in choice.why


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="MODEL_PRECISION must be one of int8, fp16, fp32, not 'bf16'"):
        choose("bf16", device="cpu", cpu=CPUS["amx"], files=ARTIFACTS["both"])


def test_the_reduce_range_network_is_the_one_safe_without_vnni() -> None:
    assert [n.precision for n in networks.INT8_NETWORKS] == ["int8", "int8-reduce-range"]  # fastest first
    assert INT8_REDUCE_RANGE.reduce_range and not INT8.reduce_range
    assert CPUS["avx2"].safe(INT8_REDUCE_RANGE) is None and CPUS["avx2"].safe(INT8) is not None
    assert CPUS["avx512_vnni"].safe(INT8) is None and CPUS["avx512_vnni"].safe(INT8_REDUCE_RANGE) is None


# -- reading the flags ------------------------------------------------------------------------

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni
bugs\t\t: sysret_ss_attrs

processor\t: 1
flags\t\t: fpu avx avx2
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse2 avx avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm
CPU implementer\t: 0x41
"""


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_flags_are_read_from_the_first_processor(tmp_path: Path) -> None:
    cpu = read_cpu_flags(cpuinfo(tmp_path, EPYC))
    assert cpu.flags is not None and {"avx2", "sha_ni"} <= cpu.flags and "avx512_vnni" not in cpu.flags
    assert (cpu.summary, cpu.model) == ("avx2", "AMD EPYC")
    cpu = read_cpu_flags(cpuinfo(tmp_path, SAPPHIRE_RAPIDS))
    assert cpu.summary == "avx2 avx512f avx512_vnni amx_int8 avx512_bf16"
    assert cpu.model == "Intel(R) Xeon(R) Platinum 8488C"
    assert choose("int8", device="cpu", cpu=cpu, files=ARTIFACTS["both"]).precision == "int8"


def test_a_cpu_without_a_flags_line_is_unknown_and_serves_fp32(tmp_path: Path) -> None:
    cpu = read_cpu_flags(cpuinfo(tmp_path, GRAVITON))
    assert cpu.flags is None and "no flags line" in cpu.summary and cpu.model == "unknown"
    choice = choose("int8", device="cpu", cpu=cpu, files=ARTIFACTS["both"])
    assert (choice.precision, choice.fallback) == ("fp32", True) and "unknown" in choice.why


def test_an_unreadable_cpuinfo_is_unknown(tmp_path: Path) -> None:
    cpu = read_cpu_flags(tmp_path / "missing")
    assert cpu.flags is None and "cannot be read" in cpu.source


@pytest.mark.parametrize(
    ("environ", "summary", "served", "engine"),
    [
        ({}, "avx2 avx512f avx512_vnni amx_int8 avx512_bf16", "int8", "x86"),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, "avx2 avx512f avx512_vnni", "int8", "x86"),
        ({"ONEDNN_MAX_CPU_ISA": "avx512_core"}, "avx2 avx512f", "int8-reduce-range", "fbgemm"),
        ({"FBGEMM_ENABLE_INSTRUCTIONS": "AVX512"}, "avx2 avx512f", "int8-reduce-range", "fbgemm"),
        ({"ATEN_CPU_CAPABILITY": "avx2"}, "avx2", "int8-reduce-range", "fbgemm"),
        ({"ATEN_CPU_CAPABILITY": "default"}, "none of avx2, avx512f, avx512_vnni", "fp32", ""),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX", "ATEN_CPU_CAPABILITY": "avx512"}, None, "int8", "x86"),
        ({"ONEDNN_MAX_CPU_ISA": ""}, None, "int8", "x86"),  # set but empty: no cap
    ],
)
def test_a_cap_on_the_kernels_instruction_set_takes_its_flags_away(
    tmp_path: Path, environ: dict[str, str], summary: str | None, served: str, engine: str
) -> None:
    """A worker whose kernels may not use VNNI (or AVX-512) chooses as a CPU without it, and keeps
    its int8 convolutions where such a CPU runs them (FBGEMM); a cap at or above the CPU changes nothing."""
    cpu = read_cpu_flags(cpuinfo(tmp_path, SAPPHIRE_RAPIDS), environ)
    uncapped = "avx2 avx512f avx512_vnni amx_int8 avx512_bf16"
    assert cpu.summary.split(" (capped by")[0] == (summary or uncapped)
    assert ("capped by" in cpu.summary) == bool(cpu.cap) == any(v.strip() for v in environ.values())
    choice = choose("int8", device="cpu", cpu=cpu, files=ARTIFACTS["both"])
    assert (choice.precision, choice.engine) == (served, engine)


def test_caps_leave_a_cpu_without_the_capped_flags_as_it_is(tmp_path: Path) -> None:
    environ = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX512_E1"}
    assert read_cpu_flags(cpuinfo(tmp_path, EPYC), environ).flags == read_cpu_flags(cpuinfo(tmp_path, EPYC), {}).flags
    assert read_cpu_flags(cpuinfo(tmp_path, GRAVITON), environ).flags is None  # unknown stays unknown


def test_the_quantized_engine_is_x86_only_where_vnni_may_be_used() -> None:
    engines = {name: networks.quantized_engine(cpu) for name, cpu in CPUS.items()}
    assert engines == {
        "avx2": "fbgemm", "avx512": "fbgemm", "avx512_vnni": "x86", "amx": "x86",
        "avx_vnni": "fbgemm", "sse_only": "fbgemm", "unknown": "fbgemm",
    }  # fmt: skip
