"""cpu_classes.py's pure parts: what a class serves, which kernels ONEDNN_VERBOSE says ran, and the
check that the caps held. The measurement itself runs in make benchmark and make cost."""

from __future__ import annotations

import cpu_classes
from cpu_classes import AMX, AVX2, AVX512, CLASSES, VNNI, Kernels, can_stand_for, check, expected_network

# ONEDNN_VERBOSE=1's lines as torch 2.6's oneDNN 3.5 wrote them for an int8 ResNet-18 on a VNNI CPU
VERBOSE = """onednn_verbose,info,oneDNN v3.5.3 (commit 66f0cb9eb66affd2da3bf5f8d897376f04aae6af)
onednn_verbose,primitive,info,template:operation,engine,primitive,implementation,prop_kind,memory_descriptors
onednn_verbose,primitive,exec,cpu,reorder,jit:uni,undef,src_s8::blocked:abcd::f0 dst_s8,,64x3x7x7,0.16
onednn_verbose,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_vnni,forward_inference,src_u8,,mb1,0.2
onednn_verbose,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_vnni,forward_inference,src_u8,,mb1,0.2
onednn_verbose,primitive,exec,cpu,convolution,brgconv_1x1:avx512_core_vnni,forward_inference,src_u8,,mb1,0.1
something else the handler printed
"""


def test_the_kernels_that_ran_are_read_from_the_verbose_lines() -> None:
    kernels = cpu_classes.onednn_kernels(VERBOSE)
    assert kernels == {
        "reorder jit:uni": 1,
        "convolution brg_conv_fwd:avx512_core_vnni": 2,
        "convolution brgconv_1x1:avx512_core_vnni": 1,
    }
    ran = Kernels("int8", "x86", "AVX512", kernels)
    assert ran.highest_isa() == "avx512_core_vnni"
    assert ran.convolutions == "oneDNN brg_conv_fwd:avx512_core_vnni, brgconv_1x1:avx512_core_vnni"
    assert Kernels("int8-reduce-range", "fbgemm", "AVX2", {}).convolutions.startswith("FBGEMM")


def test_a_kernel_above_the_class_or_another_network_or_capability_fails_the_check() -> None:
    vnni_ran = Kernels("int8", "x86", "AVX512", cpu_classes.onednn_kernels(VERBOSE))
    assert check(VNNI, vnni_ran, "int8") is None
    assert check(AMX, vnni_ran, "int8") is None  # AMX's cap allows VNNI's kernels
    assert "above AVX512_CORE" in (check(AVX512, vnni_ran, "int8") or "")
    assert "served int8, not int8-reduce-range" in (check(VNNI, vnni_ran, "int8-reduce-range") or "")
    assert "ATen ran its AVX512 kernels, not avx2" in (check(AVX2, Kernels("int8", "x86", "AVX512", {}), "int8") or "")


def test_each_class_serves_what_its_hosts_serve_and_stands_only_on_a_cpu_with_its_flags() -> None:
    assert [expected_network(cls) for cls in CLASSES] == ["int8", "int8", "int8-reduce-range", "int8-reduce-range"]
    zen4 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
    assert [can_stand_for(cls, zen4) for cls in CLASSES] == [False, True, True, True]
    assert [can_stand_for(cls, frozenset({"avx2"})) for cls in CLASSES] == [False, False, False, True]
    assert not any(can_stand_for(cls, None) for cls in CLASSES)
    # each class's caps are values the capping variables take, and the handler reads them so
    import networks

    for cls in CLASSES:
        capped = networks.read_cpu_flags(environ=cls.environment())
        assert capped.flags is None or not (capped.flags - cls.flags) & {"avx512f", "avx512_vnni", "amx_int8"}
