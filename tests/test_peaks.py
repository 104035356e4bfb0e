"""bench.peaks: datasheet peaks matched on full device names, as torch and NVML print them.
Every trap (a variant, a neighbour whose name contains another's) gets its own figure or
None, never a neighbour's number."""
import re

import pytest

from bench import hardware, peaks

T = 1e12

# (name as torch.cuda.get_device_name / NVML print it, dense bf16 TFLOP/s or None)
BF16 = [
    ("NVIDIA H100 80GB HBM3", 989),  # the SXM5 part
    ("NVIDIA H100 PCIe", 756),
    ("NVIDIA H100 NVL", 835),
    ("NVIDIA H100", None),  # SXM, PCIe or NVL: the name does not say
    ("NVIDIA H200", 989),  # SXM
    ("NVIDIA H200 NVL", 835),
    ("NVIDIA GH200 480GB", 989),  # not "H200"
    ("NVIDIA GH200 144G HBM3e", 989),
    ("NVIDIA B200", 2250),
    ("NVIDIA GB200", 2500),  # not "B200"
    ("NVIDIA H20", None),  # not "H200"; no datasheet
    ("NVIDIA H800", None),
    ("NVIDIA A100-SXM4-80GB", 312),
    ("NVIDIA A100-SXM4-40GB", 312),
    ("NVIDIA A100-PCIE-40GB", 312),
    ("NVIDIA A100 80GB PCIe", 312),
    ("NVIDIA RTX A1000", None),  # not an A100
    ("NVIDIA A800-SXM4-80GB", None),
    ("NVIDIA A10", 125),  # not an A100
    ("NVIDIA A10G", None),  # not an A10
    ("NVIDIA A40", 149.7),
    ("NVIDIA L4", 121),
    ("NVIDIA L40", 181.05),  # not L4, not L40S
    ("NVIDIA L40S", 362),
    ("Tesla V100-SXM2-16GB", None),  # no bf16 unit on Volta
    ("Tesla V100-PCIE-32GB", None),
    ("Tesla V100S-PCIE-32GB", None),
    ("Tesla T4", None),  # no bf16 unit on Turing
    ("NVIDIA T400", None),  # not a T4
    ("AMD Instinct MI300X", 1307.4),
    ("AMD Instinct MI325X", 1307.4),
    ("AMD Instinct MI250X", 191.5),  # one GCD: half the OAM module's 383
    ("AMD Instinct MI250", 181.05),  # the non-X part, where a name says so alone
    ("AMD Instinct MI250X/MI250", None),  # names both parts
    ("AMD Instinct MI250X / MI250", None),
    ("AMD Instinct MI210", None),
    ("NVIDIA GeForce RTX 4090", None),
    ("NVIDIA RTX A6000", None),
    ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", None),  # a slice of an A100
    ("AMD EPYC 7B13", None),
]

# (name, dtype, dense TFLOP/s or None)
OTHER = [
    ("NVIDIA H100 NVL", "fp32", 60),
    ("NVIDIA H100 PCIe", "tf32", 378),
    ("NVIDIA H200 NVL", "tf32", 418),
    ("NVIDIA H200", "fp32", 67),
    ("NVIDIA GB200", "fp32", 80),
    ("NVIDIA B200", "tf32", 1100),
    ("NVIDIA B200", "fp32", 75),
    ("NVIDIA A100-PCIE-40GB", "fp32", 19.5),
    ("NVIDIA L40", "tf32", 90.5),
    ("NVIDIA L40S", "fp32", 91.6),
    ("NVIDIA A40", "fp16", None),  # only an FP16-accumulate figure was found
    ("Tesla V100-SXM2-32GB", "fp16", 125),
    ("Tesla V100-PCIE-16GB", "fp16", 112),
    ("Tesla V100S-PCIE-32GB", "fp16", 130),
    ("Tesla V100S-PCIE-32GB", "fp32", 16.4),
    ("Tesla V100-SXM3-32GB", "fp16", None),  # a variant the datasheet does not list
    ("Tesla T4", "fp16", 65),
    ("Tesla T4", "tf32", None),
    ("NVIDIA T400", "fp16", None),
    ("AMD Instinct MI250X", "fp32", 47.85),  # the matrix rate, per GCD
    ("AMD Instinct MI250X", "tf32", None),  # CDNA2 has no TF32
    ("AMD Instinct MI300X", "fp32", 163.4),
    ("AMD Instinct MI325X", "tf32", 653.7),
]


@pytest.mark.parametrize("name, tflops", BF16)
def test_bf16_peak_by_full_name(name, tflops):
    peak, why = peaks.table_peak(name, "bf16")
    assert why
    if tflops is None:
        assert peak is None, (name, why)
    else:
        assert peak == pytest.approx(tflops * T), (name, why)


@pytest.mark.parametrize("name, dtype, tflops", OTHER)
def test_other_dtypes(name, dtype, tflops):
    peak, why = peaks.table_peak(name, dtype)
    assert (peak is None) if tflops is None else (peak == pytest.approx(tflops * T)), (name, dtype, why)


def test_enough_real_names():
    assert len({n for n, _ in BF16}) >= 30


def test_neighbours_never_share_a_row():
    pairs = [("NVIDIA H200", "NVIDIA H200 NVL"), ("NVIDIA H200", "NVIDIA GH200 480GB"),
             ("NVIDIA B200", "NVIDIA GB200"), ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"),
             ("NVIDIA H100 PCIe", "NVIDIA H100 NVL"), ("NVIDIA A100-SXM4-40GB", "NVIDIA RTX A1000"),
             ("NVIDIA A10", "NVIDIA A100-SXM4-40GB"), ("NVIDIA A10", "NVIDIA A10G"), ("Tesla T4", "NVIDIA T400"),
             ("NVIDIA L4", "NVIDIA L40"), ("NVIDIA L40", "NVIDIA L40S"), ("NVIDIA H20", "NVIDIA H200"),
             ("Tesla V100-PCIE-32GB", "Tesla V100S-PCIE-32GB"), ("Tesla V100-SXM2-16GB", "Tesla V100-PCIE-16GB"),
             ("AMD Instinct MI300X", "AMD Instinct MI325X"), ("AMD Instinct MI250X", "AMD Instinct MI250X/MI250")]
    for a, b in pairs:
        ra, rb = peaks.identify(a), peaks.identify(b)
        assert ra is None or rb is None or ra.device != rb.device, (a, b)


def test_every_row_has_a_source_and_sane_figures():
    for row in peaks.TABLE:
        assert row.device.strip() and row.source.strip(), row
        re.compile(row.pattern)
        assert set(row.flops) <= {"bf16", "fp16", "tf32", "fp32"}, row
        assert all(1e12 <= v <= 1e16 for v in row.flops.values()), row  # TFLOP/s scale, not TFLOPs as a number
        if row.flops:  # a figure names the document it comes from
            assert re.search(r"datasheet|data sheet|specifications", row.source, re.I), row


def test_no_row_is_shadowed_by_an_earlier_one():
    """Each row with figures is what at least one real name above resolves to."""
    reached = {peaks.identify(n).device for n, _ in BF16 + [(n, None) for n, _, _ in OTHER] if peaks.identify(n)}
    assert {r.device for r in peaks.TABLE if r.flops} <= reached


def test_normalise():
    assert peaks.normalise("Tesla V100S-PCIE-32GB") == "tesla v100s pcie 32gb"
    assert peaks.normalise("NVIDIA A100-SXM4-80GB") == "a100 sxm4 80gb"
    assert peaks.normalise("AMD Instinct MI250X/MI250") == "instinct mi250x mi250"


def test_why_says_why():
    assert "not in the peak table" in peaks.table_peak("NVIDIA GeForce RTX 4090", "bf16")[1]
    assert "no bf16 figure for T4" in peaks.table_peak("Tesla T4", "bf16")[1]
    assert "MIG" in peaks.table_peak("NVIDIA H100 80GB HBM3 MIG 3g.40gb", "bf16")[1]
    peak, src = peaks.table_peak("NVIDIA H200 NVL", "bf16")
    assert src.startswith("H200 NVL:") and "datasheet" in src


def test_hardware_keeps_the_callers_signature():
    """bench.worker and bench.perf call hardware.table_peak(name, dtype) -> (peak | None, str)."""
    assert hardware.table_peak is peaks.table_peak
    peak, src = hardware.table_peak("NVIDIA H100 80GB HBM3", "bf16")
    assert peak == 989e12 and isinstance(src, str)
