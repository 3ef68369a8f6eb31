"""The serving path as each class of CPU that AWS rents would run it, measured side by side on this
machine. make benchmark prints the rows; make cost prices each transform instance type by its hosts' class.

A class is stood for by capping what torch's kernels may use, in the model's environment:
ONEDNN_MAX_CPU_ISA (oneDNN: convolutions in fp32, and int8 ones where VNNI may be used),
ATEN_CPU_CAPABILITY (ATen's vectorised kernels) and FBGEMM_ENABLE_INSTRUCTIONS (FBGEMM: int8
convolutions without VNNI). The handler reads the same variables (networks.read_cpu_flags), so it
serves the network that class's CPU would, on the engine it would (networks.quantized_engine). A
class above this CPU cannot be stood for (no cap adds an instruction) and is reported as not
measured here.

Before a class is measured, a probe (this file with --probe, under the serving image's torch) loads
the handler with the class's caps and ONEDNN_VERBOSE=1, classifies one image, and says which oneDNN
kernels ran, ATen's capability and the network served; a kernel above the class, or another network
or capability than the class's, stops the run. FBGEMM logs nothing: its kernels are known only by
the cap FBGEMM documents (fbgemmInstructionSet keeps a forced ISA only where the CPU has it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SERVING_PYTHON = REPO / ".venv-serving" / "bin" / "python"  # the serving image's torch 2.6
# oneDNN's instruction sets, lowest first, as its kernels' names end ("brg_conv_fwd:avx512_core_vnni").
ONEDNN_ISAS = (
    "sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core", "avx512_core_vnni", "avx512_core_bf16",
    "avx512_core_fp16", "avx10_1_512", "avx512_core_amx", "avx512_core_amx_fp16", "avx10_1_512_amx",
)  # fmt: skip


@dataclass(frozen=True)
class CpuClass:
    name: str
    flags: frozenset[str]  # the flags of its CPUs that choose the network; this machine must have them to stand for it
    onednn: str  # ONEDNN_MAX_CPU_ISA
    aten: str  # ATEN_CPU_CAPABILITY
    fbgemm: str  # FBGEMM_ENABLE_INSTRUCTIONS
    hosts: str  # which CPUs and instance families, in words

    def environment(self) -> dict[str, str]:
        return {
            "ONEDNN_MAX_CPU_ISA": self.onednn,
            "ATEN_CPU_CAPABILITY": self.aten,
            "FBGEMM_ENABLE_INSTRUCTIONS": self.fbgemm,
        }

    def allows(self, isa: str) -> bool:
        """Whether a oneDNN kernel for `isa` may run in this class."""
        return ONEDNN_ISAS.index(isa) <= ONEDNN_ISAS.index(self.onednn.lower())


AMX = CpuClass(
    "AMX", frozenset({"avx2", "avx512f", "avx512_vnni", "amx_int8"}), "AVX512_CORE_AMX", "avx512", "AVX512_E1",
    "Sapphire Rapids: ml.c7i, m7i, r7i",
)  # fmt: skip
VNNI = CpuClass(
    "AVX-512 VNNI", frozenset({"avx2", "avx512f", "avx512_vnni"}), "AVX512_CORE_VNNI", "avx512", "AVX512_E1",
    "Cascade Lake, Ice Lake: ml.c6i, m6i, r6i; some ml.c5, m5 hosts",
)  # fmt: skip
AVX512 = CpuClass(
    "AVX-512", frozenset({"avx2", "avx512f"}), "AVX512_CORE", "avx512", "AVX512", "Skylake: the other ml.c5, m5 hosts"
)
AVX2 = CpuClass("AVX2", frozenset({"avx2"}), "AVX2", "avx2", "AVX2", "Haswell, Broadwell: ml.c4, m4")
CLASSES = (AMX, VNNI, AVX512, AVX2)  # fastest first
BY_NAME = {cls.name: cls for cls in CLASSES}


def can_stand_for(cls: CpuClass, flags: frozenset[str] | None) -> bool:
    return flags is not None and cls.flags <= flags


@dataclass(frozen=True)
class Kernels:
    """What the probe saw one image's classification run on."""

    served: str  # the network (answers' model_precision)
    engine: str  # torch's quantized engine
    aten: str  # torch.backends.cpu.get_cpu_capability()
    onednn: dict[str, int]  # oneDNN kernels that ran ("convolution brg_conv_fwd:avx512_core_vnni") and how often

    def highest_isa(self) -> str:
        """The highest instruction set among the oneDNN kernels that ran ("" where none named one)."""
        found = [isa for kernel in self.onednn for isa in ONEDNN_ISAS if kernel.endswith(f":{isa}")]
        return max(found, key=ONEDNN_ISAS.index, default="")

    @property
    def convolutions(self) -> str:
        """Where the convolutions ran, in words."""
        names = sorted({k.split()[1] for k in self.onednn if k.startswith("convolution ")})
        return "oneDNN " + ", ".join(names) if names else f"FBGEMM (no oneDNN convolution; engine {self.engine})"


def check(cls: CpuClass, kernels: Kernels, expected: str) -> str | None:
    """None if what ran is what `cls` runs, else what is wrong."""
    highest = kernels.highest_isa()
    if highest and not cls.allows(highest):
        return f"a oneDNN kernel for {highest} ran, above {cls.onednn}"
    if kernels.aten.lower() != cls.aten:
        return f"ATen ran its {kernels.aten} kernels, not {cls.aten}"
    if kernels.served != expected:
        return f"the handler served {kernels.served}, not {expected}"
    return None


def expected_network(cls: CpuClass) -> str:
    """What MODEL_PRECISION=int8 serves on this class's CPUs, from an artifact holding both int8 networks."""
    import networks

    cpu = networks.CpuFlags(cls.flags, "class")
    files = {network.file for network in networks.INT8_NETWORKS}
    return networks.choose("int8", device="cpu", cpu=cpu, files=files).precision


def probe(cls: CpuClass, model_dir: Path, image: bytes, environment: dict[str, str]) -> Kernels:
    """Run the probe under the serving image's torch with the class's caps (see the module's docstring)."""
    import os
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".jpg") as file:
        file.write(image)
        file.flush()
        env = {**os.environ, **environment, **cls.environment(), "ONEDNN_VERBOSE": "1"}
        env["PYTHONPATH"] = str(model_dir / "code")  # the artifact's code/, as the container has it
        result = subprocess.run(
            [str(SERVING_PYTHON), __file__, "--probe", str(model_dir), file.name],
            capture_output=True, text=True, env=env, check=True, timeout=300,
        )  # fmt: skip
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return Kernels(report["served"], report["engine"], report["aten"], onednn_kernels(result.stdout))


def onednn_kernels(verbose: str) -> dict[str, int]:
    """The oneDNN kernels that ran, by ONEDNN_VERBOSE=1's lines of executed primitives
    ("onednn_verbose,primitive,exec,cpu,<kind>,<implementation>,..."): "<kind> <implementation>"
    and how often."""
    found: dict[str, int] = {}
    for line in verbose.splitlines():
        fields = line.split(",")
        if fields[:4] == ["onednn_verbose", "primitive", "exec", "cpu"] and len(fields) > 6:
            kernel = f"{fields[4]} {fields[5]}"
            found[kernel] = found.get(kernel, 0) + 1
    return found


def _probe_main(model_dir: str, image: str) -> None:
    """In the probe's process: the handler as the container calls it, once, then what ran (stderr)."""
    import inference
    import torch

    model = inference.model_fn(model_dir)
    request = inference.input_fn(Path(image).read_bytes(), "image/jpeg")
    inference.output_fn(inference.predict_fn(request, model), "application/json")
    sys.stdout.flush()
    report = {
        "served": model.precision,
        "engine": torch.backends.quantized.engine,
        "aten": torch.backends.cpu.get_cpu_capability(),
    }
    print(json.dumps(report), file=sys.stderr)


def measure(model_dir: Path, jpegs: list[bytes], cpus: int, images: int, batch: int) -> list[dict[str, Any]]:
    """For each class, fastest first: not measured (a class above this CPU), or checked by the probe
    then measured through the real model server (serving_benchmark.measure, the template's setting,
    `cpus` cores) with its caps in the model's environment."""
    import networks
    import serving_benchmark

    flags = networks.read_cpu_flags().flags
    setting = serving_benchmark.Setting.of_template()
    rows: list[dict[str, Any]] = []
    for cls in CLASSES:
        if not can_stand_for(cls, flags):
            missing = ", ".join(sorted(cls.flags - (flags or frozenset())))
            rows.append({"class": cls.name, "hosts": cls.hosts, "measured": False, "why": f"this CPU has no {missing}"})
            continue
        kernels = probe(cls, model_dir, jpegs[0], setting.environment())
        if wrong := check(cls, kernels, expected_network(cls)):
            raise SystemExit(f"{cls.name}: the caps did not hold: {wrong} (kernels: {kernels.onednn})")
        row = serving_benchmark.measure(model_dir, jpegs, setting, cpus, images, 4, batch, cls.environment())
        rows.append({
            "class": cls.name, "hosts": cls.hosts, "measured": True, "served": kernels.served,
            "convolutions": kernels.convolutions, "aten": kernels.aten, "highest_onednn_isa": kernels.highest_isa(),
            **row,
        })  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    measured = [row for row in rows if row["measured"]]
    print("by CPU class (this machine capped to each; through TorchServe, the template's setting):")
    print(f"  {'class':<13} {'serves':<18} {'1 at a time':>12} {'4 in flight':>12} {'batch':>10}  kernels that ran")
    for row in rows:
        if not row["measured"]:
            print(f"  {row['class']:<13} not measured here: {row['why']} ({row['hosts']})")
            continue
        print(
            f"  {row['class']:<13} {row['served']:<18} {row['one_at_a_time']:>8.1f}/s {row['concurrent']:>10.1f}/s "
            f"{row['batch']:>8.1f}/s  convolutions: {row['convolutions']}; ATen {row['aten']}"
        )
    if measured:
        slowest = min(measured, key=lambda row: row["batch"])
        print("  batch = multi-record requests, 4 in flight; ratios to the slowest class measured: " + ", ".join(
            f"{row['class']} {row['batch'] / slowest['batch']:.2f}x" for row in measured
        ))  # fmt: skip


if __name__ == "__main__" and sys.argv[1:2] == ["--probe"]:
    _probe_main(sys.argv[2], sys.argv[3])
