"""Which network answers: fp32, fp16 or one of the int8 networks, by what was asked, the device, the
CPU's instruction set and what the artifact holds. Decided once, here, as a pure function
(`choose`), and reported on every answer as its `model_precision`.

The artifact can hold two int8 networks, both made by train.py (see quantization.py):
- `int8` (model_int8.pt): full-range 8-bit activations. Safe only where the CPU has AVX-512 VNNI
  (Intel since Cascade Lake, AMD since Zen 4; every AMX CPU has it too), whose instructions sum
  8-bit products in 32 bits. Without VNNI, PyTorch's int8 kernels add pairs of products in 16 bits
  (AVX2's and AVX-512's vpmaddubsw), which saturate when activations use all 8 bits.
- `int8-reduce-range` (model_int8_reduce_range.pt): the same 8-bit activations with weights in 7
  bits (PyTorch's reduce_range: each channel's largest weight is scaled to 63.5, so |w| <= 64),
  so a pair of products, at most 2 x 255 x 64 = 32,640, fits in 16 bits. Safe on every CPU with AVX2.
MODEL_PRECISION=int8 means "the fastest network that is safe here": the first of them that is in
the artifact and safe on this CPU; fp32 where neither is.

The instruction set is read from the `flags` line of /proc/cpuinfo (Linux's public interface;
every SageMaker container is Linux). Where it cannot be read, it is unknown, and unknown selects
fp32 with the reason logged: nothing is guessed. Where the environment caps what torch's kernels
may use (ONEDNN_MAX_CPU_ISA for oneDNN, ATEN_CPU_CAPABILITY for ATen, FBGEMM_ENABLE_INSTRUCTIONS
for FBGEMM), the flags above the cap are taken away first: a worker whose kernels may not use VNNI
serves as a CPU without it (`make benchmark` measures each CPU class that way).

Standard library only: the unit tests cover every combination without torch.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("int8", "fp16", "fp32")  # what MODEL_PRECISION may ask for
WEIGHTS_FILE = "model.pth"  # the trained weights: fp32 and fp16 serve them, the int8 networks are made of them
CPUINFO = Path("/proc/cpuinfo")

# The flags above each instruction-set level, and the level each value of a capping variable allows.
_AMX = frozenset({"amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "avx512_fp16"})
_ABOVE_VNNI = _AMX | {"avx512_bf16"}
_ABOVE_AVX512 = _ABOVE_VNNI | {"avx512_vnni"}
_ABOVE_AVX2 = _ABOVE_AVX512 | {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"} | {"avx_vnni"}
CAPS: dict[str, dict[str, frozenset[str]]] = {  # variable -> its value (upper case) -> the flags it takes away
    "ONEDNN_MAX_CPU_ISA": {
        "AVX2": _ABOVE_AVX2,
        "AVX2_VNNI": _ABOVE_AVX2 - {"avx_vnni"},
        "AVX512_CORE": _ABOVE_AVX512,
        "AVX512_CORE_VNNI": _ABOVE_VNNI,
        "AVX512_CORE_BF16": _AMX,
    },
    "ATEN_CPU_CAPABILITY": {"DEFAULT": _ABOVE_AVX2 | {"avx2"}, "AVX2": _ABOVE_AVX2},
    "FBGEMM_ENABLE_INSTRUCTIONS": {
        "AVX2": _ABOVE_AVX2,
        "AVX512": _ABOVE_AVX512,
        "AVX512_256": _ABOVE_AVX512,
    },
}


@dataclass(frozen=True)
class Int8Network:
    """One of the int8 networks train.py writes beside model.pth."""

    precision: str  # what the answer and the prediction record say served it
    file: str
    reduce_range: bool  # 7-bit weights (safe without VNNI) instead of 8-bit ones
    needs: str  # the CPU feature it is safe on, in words


INT8 = Int8Network("int8", "model_int8.pt", reduce_range=False, needs="AVX-512 VNNI")
INT8_REDUCE_RANGE = Int8Network("int8-reduce-range", "model_int8_reduce_range.pt", reduce_range=True, needs="AVX2")
INT8_NETWORKS = (INT8, INT8_REDUCE_RANGE)  # fastest first


@dataclass(frozen=True)
class CpuFlags:
    """The CPU's instruction-set flags, or None where they are unknown (and `source` says why)."""

    flags: frozenset[str] | None
    source: str
    model: str = "unknown"  # the `model name` line, for logs and benchmark reports
    cap: str = ""  # the capping variables that took flags away ("ONEDNN_MAX_CPU_ISA=AVX2, ..."), if any

    @property
    def summary(self) -> str:
        """The flags that decide the network, for logs and benchmark reports."""
        if self.flags is None:
            return f"unknown ({self.source})"
        shown = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16")
        found = " ".join(flag for flag in shown if flag in self.flags) or "none of avx2, avx512f, avx512_vnni"
        return f"{found} (capped by {self.cap})" if self.cap else found

    def safe(self, network: Int8Network) -> str | None:
        """None if `network` is safe on this CPU, else why not."""
        if self.flags is None:
            return f"this CPU's instruction set is unknown ({self.source})"
        if "avx2" not in self.flags:
            return "this CPU has no AVX2, which the int8 kernels need"
        if not network.reduce_range and "avx512_vnni" not in self.flags:
            return "this CPU has no AVX-512 VNNI, without which 8-bit weights times 8-bit activations can saturate"
        return None


def read_cpu_flags(cpuinfo: Path = CPUINFO, environ: Mapping[str, str] | None = None) -> CpuFlags:
    """The `flags` of the first processor in /proc/cpuinfo (x86 Linux), less those the CAPS in
    `environ` (default: this process's environment) take away; unknown elsewhere."""
    cpu = _read_flags(cpuinfo)
    environ = os.environ if environ is None else environ
    caps = [(name, environ[name].strip().upper()) for name in CAPS if environ.get(name, "").strip()]
    removed = frozenset().union(*(CAPS[name].get(value, frozenset()) for name, value in caps))
    if cpu.flags is None or not caps:
        return cpu
    capped = ", ".join(f"{name}={value}" for name, value in caps)
    return CpuFlags(cpu.flags - removed, cpu.source, cpu.model, capped)


def _read_flags(cpuinfo: Path) -> CpuFlags:
    try:
        text = cpuinfo.read_text()
    except OSError as exc:
        return CpuFlags(None, f"{cpuinfo} cannot be read: {exc.strerror or exc}")
    fields: dict[str, str] = {}
    for line in text.splitlines():  # the first processor's lines come first
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip(), value.strip())
    model = fields.get("model name", "unknown")
    if "flags" not in fields:
        return CpuFlags(None, f"{cpuinfo} has no flags line (not an x86 CPU?)", model)
    return CpuFlags(frozenset(fields["flags"].split()), str(cpuinfo), model)


@dataclass(frozen=True)
class Choice:
    """The network a worker serves, and why."""

    precision: str  # "fp32", "fp16", "int8" or "int8-reduce-range": what answers report
    file: str  # the file in the model directory it loads
    why: str  # why this one, in words, for the log
    fallback: bool  # True where it is not what MODEL_PRECISION asked for (logged as a warning)
    engine: str = ""  # an int8 network's quantized engine (see quantized_engine); "" for the others


def choose(
    asked: str,
    *,
    device: str,
    cpu: CpuFlags,
    files: Collection[str],
    int8_kernels: bool = True,
) -> Choice:
    """What a worker serves for MODEL_PRECISION=`asked` on `device` ("cpu", "cuda"), a CPU with
    these flags, a model directory holding `files`, and a torch that has (or lacks) its x86 int8
    kernels. Raises ValueError for a precision that is not one of PRECISIONS."""
    asked = asked.strip().lower()
    if asked not in PRECISIONS:
        raise ValueError(f"MODEL_PRECISION must be one of {', '.join(PRECISIONS)}, not {asked!r}")
    if asked == "fp32":
        return Choice("fp32", WEIGHTS_FILE, "MODEL_PRECISION=fp32", fallback=False)
    if asked == "fp16":
        if device == "cuda":
            return Choice("fp16", WEIGHTS_FILE, "MODEL_PRECISION=fp16 on a GPU", fallback=False)
        return _fp32(f"fp16 is for GPUs and this worker has {device}")
    if device != "cpu":
        return _fp32(f"int8 kernels are for CPUs and this worker has {device}")
    if not int8_kernels:
        return _fp32("this torch has no x86 int8 kernels")
    if refusal := cpu.safe(INT8_REDUCE_RANGE):  # the network that needs the least of a CPU
        return _fp32(refusal)
    present = [network for network in INT8_NETWORKS if network.file in files]
    if not present:
        return _fp32("the model has no int8 network (train.py --no-int8, or an older artifact)")
    refusals: list[str] = []
    for network in present:
        refusal = cpu.safe(network)
        if refusal is None:
            skipped = "; ".join(refusals)
            why = f"{network.file}, safe with {network.needs}" + (f" ({skipped})" if skipped else "")
            return Choice(network.precision, network.file, why, fallback=False, engine=quantized_engine(cpu))
        refusals.append(f"not {network.file}: {refusal}")
    missing = [network.file for network in INT8_NETWORKS if network not in present]
    if missing:
        refusals.append(f"the model has no {', '.join(missing)} (an artifact from before it existed?)")
    return _fp32("; ".join(refusals))


def quantized_engine(cpu: CpuFlags) -> str:
    """torch's quantized engine for an int8 network on this CPU: "x86" where VNNI may be used (its
    convolutions then run on oneDNN, with AMX where the CPU has it), else "fbgemm", which is what x86
    runs them on without VNNI. x86 asks the CPU itself, not the capping variables, so under a cap
    that takes VNNI away only this keeps the convolutions where a CPU without VNNI runs them."""
    return "x86" if cpu.flags is not None and "avx512_vnni" in cpu.flags else "fbgemm"


def _fp32(reason: str) -> Choice:
    return Choice("fp32", WEIGHTS_FILE, reason, fallback=True)
