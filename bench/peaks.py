"""Datasheet peak FLOP/s per device and dtype, matched on the device's full name.

What the figures are:
  * FLOP/s of one device as torch sees it (one CUDA/HIP device: one GPU, one GCD of an
    MI250X), dense: no 2:4 structured sparsity. Datasheets print the sparse figure (2x) in
    large type with a footnote; the rows below give half of it where only that is printed.
  * bf16 / fp16: tensor-core (matrix-core) rate with fp32 accumulation, what autocast's
    matmuls run at.
  * tf32: tensor-core TF32 rate, for reference only: torch does not use TF32 for fp32
    matmuls unless told to (this suite does not tell it).
  * fp32: the rate an fp32 matmul can reach as torch runs it. On NVIDIA that is the
    non-tensor-core (CUDA core) rate. On AMD CDNA the matrix cores compute full fp32 and
    rocBLAS uses them (a published fp32 GEMM on one MI250X/MI250 GCD ran at 37.5 TFLOP/s,
    above the GCD's 23.9 vector peak), so the fp32 matrix rate is given: a ceiling, never
    below what can be measured.
  * A dtype a device has no native unit for (bf16 on V100 and T4: torch may report bf16
    as supported, through emulation) or whose figure no vendor document gives is absent:
    `table_peak` answers None and says why. Never another device's number: a device that
    is not in the table gets None, not its neighbour's figure.

How matching works: `normalise` lowercases the name torch (`torch.cuda.get_device_name`)
or NVML reports, turns punctuation into spaces and drops the vendor word ("NVIDIA", "AMD"),
so "Tesla V100-PCIE-32GB" reads "tesla v100 pcie 32gb". Each row's pattern is a regular
expression with word boundaries, tried in table order, first match wins, and every family
lists its variants before itself: "h200 nvl" before "h200", so an H200 NVL never takes
the SXM figure; the word "a100" is not in "rtx a1000", nor "t4" in "t400"; "gh200" and
"gb200" are words of their own, not "h200" and "b200". A family whose variants differ
and whose name does not say which (e.g. a bare "H100") has a row without figures, so the
answer is None with the reason. MIG slices get None: a slice has a fraction of the
device's units that its name does not give exactly.

Torch-free: imported by bench.hardware before torch is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

TFLOPS = 1e12

# The vendor documents the rows cite: the document's name, and the vendor's URL for it as
# known when the row was written (check it before relying on a figure: vendors move pages).
_A100 = ("NVIDIA A100 Tensor Core GPU datasheet (SXM and PCIe, 40 and 80 GB share the dense "
         "peaks), https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
         "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf")
_H100 = ("NVIDIA H100 Tensor Core GPU datasheet, {} column, tensor figures printed with sparsity "
         "and halved here, https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet")
_H200 = ("NVIDIA H200 Tensor Core GPU datasheet / specifications, {} column, tensor figures printed "
         "with sparsity and halved here, https://www.nvidia.com/en-us/data-center/h200/")
_BLACKWELL = ("NVIDIA {} specifications, 'Individual Blackwell GPU Specifications' (per GPU), tensor "
              "figures printed with sparsity and halved here, {}")
_V100 = ("NVIDIA Tesla V100 GPU datasheet, {} column (fp16 tensor; Volta has no bf16 or tf32 unit), "
         "https://images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf")
_MI200 = ("AMD Instinct {} data sheet: {} per OAM module of two GCDs; torch sees each GCD as one "
          "device, so halved here; fp32 is the matrix rate; CDNA2 has no TF32, {}")


@dataclass(frozen=True)
class Peak:
    device: str  # the device this row describes, e.g. "H100 SXM"
    pattern: str  # regular expression over the normalised name (see `normalise`)
    flops: dict[str, float]  # dtype (bf16 | fp16 | tf32 | fp32) -> dense FLOP/s; empty: none known
    source: str  # the document the figures come from, or why there are none


def _t(bf16: float | None = None, fp16: float | None = None, tf32: float | None = None,
       fp32: float | None = None) -> dict[str, float]:
    """{dtype: FLOP/s} from TFLOP/s arguments, leaving out the ones not given."""
    given = {"bf16": bf16, "fp16": fp16, "tf32": tf32, "fp32": fp32}
    return {k: v * TFLOPS for k, v in given.items() if v is not None}


TABLE: tuple[Peak, ...] = (
    # -- NVIDIA Blackwell. "GB200" (the Grace Blackwell part, 1200 W) runs faster than the
    # HGX "B200" (1000 W); each is its own word, so neither matches the other.
    Peak("GB200", r"\bgb200\b", _t(bf16=2500, fp16=2500, tf32=1250, fp32=80),
         _BLACKWELL.format("GB200 NVL72", "https://www.nvidia.com/en-us/data-center/gb200-nvl72/")),
    Peak("B200", r"\bb200\b", _t(bf16=2250, fp16=2250, tf32=1100, fp32=75),
         _BLACKWELL.format("HGX B200", "https://www.nvidia.com/en-us/data-center/hgx/")),
    # -- NVIDIA Hopper. GH200's GPU is the 132-SM H100-SXM-class part ("NVIDIA GH200 480GB",
    # "NVIDIA GH200 144G HBM3e").
    Peak("GH200", r"\bgh200\b", _t(bf16=989, fp16=989, tf32=495, fp32=67),
         "NVIDIA GH200 Grace Hopper Superchip datasheet (GPU: FP16/BF16 990 TFLOPS dense, TF32 494, "
         "FP32 67; the H100 SXM class), https://www.nvidia.com/en-us/data-center/grace-hopper-superchip/"),
    Peak("H200 NVL", r"\bh200\b.*\bnvl\b", _t(bf16=835, fp16=835, tf32=418, fp32=60),
         _H200.format("H200 NVL (1,671 TFLOPS bf16 sparse)")),
    Peak("H200 SXM", r"\bh200\b", _t(bf16=989, fp16=989, tf32=495, fp32=67),
         _H200.format("H200 SXM (1,979 TFLOPS bf16 sparse); a bare 'NVIDIA H200' is the SXM part, the "
                      "PCIe part says NVL")),
    Peak("H100 NVL", r"\bh100\b.*\bnvl\b", _t(bf16=835, fp16=835, tf32=418, fp32=60),
         _H100.format("H100 NVL (per GPU)")),
    Peak("H100 PCIe", r"\bh100\b.*\bpcie\b", _t(bf16=756, fp16=756, tf32=378, fp32=51),
         _H100.format("H100 PCIe")),
    Peak("H100 SXM", r"\bh100\b.*\b(sxm\d?|hbm3)\b", _t(bf16=989, fp16=989, tf32=495, fp32=67),
         _H100.format("H100 SXM ('NVIDIA H100 80GB HBM3' is the SXM5 part)")),
    Peak("H100 (variant not named)", r"\bh100\b", {},
         "the name says neither SXM (HBM3), PCIe nor NVL, whose peaks differ (989, 756, 835 TFLOPS bf16)"),
    Peak("H800", r"\bh800\b", {},
         "no NVIDIA datasheet with H800 figures found; not assumed equal to the H100's"),
    Peak("H20", r"\bh20\b", {},
         "NVIDIA publishes no H20 datasheet; third-party reports (about 148 TFLOPS dense bf16) are not used"),
    # -- NVIDIA Ada
    Peak("L40S", r"\bl40s\b", _t(bf16=362, fp16=362, tf32=183, fp32=91.6),
         "NVIDIA L40S datasheet (BF16/FP16 362.05 dense, 733 sparse; TF32 183), "
         "https://www.nvidia.com/en-us/data-center/l40s/"),
    Peak("L40", r"\bl40\b", _t(bf16=181.05, fp16=181.05, tf32=90.5, fp32=90.5),
         "NVIDIA L40 datasheet (BF16/FP16 181.05 dense, 362.1 sparse; TF32 90.5 dense), "
         "https://www.nvidia.com/en-us/data-center/l40/"),
    Peak("L4", r"\bl4\b", _t(bf16=121, fp16=121, tf32=60, fp32=30.3),
         "NVIDIA L4 datasheet (BF16/FP16 242 and TF32 120 printed with sparsity, halved here), "
         "https://www.nvidia.com/en-us/data-center/l4/"),
    # -- NVIDIA Ampere. "a100" is a word: "RTX A1000", "A100X" and "A800" are not A100s.
    Peak("A100", r"\ba100\b", _t(bf16=312, fp16=312, tf32=156, fp32=19.5), _A100),
    Peak("A10G", r"\ba10g\b", {},
         "the AWS A10G (EC2 G5) differs from the A10 in tensor throughput and has no vendor datasheet "
         "figure; none used"),
    Peak("A10", r"\ba10\b", _t(bf16=125, fp16=125, tf32=62.5, fp32=31.2),
         "NVIDIA A10 Tensor Core GPU datasheet (BF16/FP16 125 dense, 250 sparse; TF32 62.5), "
         "https://www.nvidia.com/en-us/data-center/products/a10-gpu/"),
    Peak("A40", r"\ba40\b", _t(bf16=149.7, tf32=74.8, fp32=37.4),
         "NVIDIA A40 datasheet (BF16 with FP32 accumulate 149.7 dense; TF32 74.8; FP32 37.4); fp16 left "
         "out: the copy found gives it with FP16 accumulate only, https://www.nvidia.com/en-us/data-center/a40/"),
    # -- NVIDIA Volta and Turing: fp16 tensor cores, no bf16 or tf32 unit.
    Peak("V100S PCIe", r"\bv100s\b", _t(fp16=130, fp32=16.4), _V100.format("V100S PCIe")),
    Peak("V100 PCIe", r"\bv100\b.*\bpcie\b", _t(fp16=112, fp32=14), _V100.format("V100 PCIe")),
    Peak("V100 SXM2", r"\bv100\b.*\bsxm2\b", _t(fp16=125, fp32=15.7), _V100.format("V100 SXM2")),
    Peak("V100 (other variant)", r"\bv100\b", {},
         "a V100 variant the datasheet does not list (SXM3, FHHL, DGXS): clocks differ, none used"),
    Peak("T4", r"\bt4\b", _t(fp16=65, fp32=8.1),
         "NVIDIA T4 Tensor Core GPU datasheet (mixed-precision FP16/FP32 65; Turing has no bf16 or tf32 "
         "unit), https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/"
         "t4-tensor-core-datasheet-951643.pdf"),
    # -- AMD Instinct. ROCm names a CDNA2 part "AMD Instinct MI250X" or, by PCI revision,
    # "AMD Instinct MI250X / MI250", which covers both parts (110 and 104 CUs per GCD).
    Peak("MI325X", r"\bmi325x\b", _t(bf16=1307.4, fp16=1307.4, tf32=653.7, fp32=163.4),
         "AMD Instinct MI325X data sheet (the MI300X's compute: BF16/FP16 1307.4 dense, TF32 653.7, "
         "FP32 163.4), https://www.amd.com/en/products/accelerators/instinct/mi300/mi325x.html"),
    Peak("MI300X", r"\bmi300x\b", _t(bf16=1307.4, fp16=1307.4, tf32=653.7, fp32=163.4),
         "AMD Instinct MI300X data sheet (BF16/FP16 1307.4 dense, 2614.9 sparse; TF32 653.7; FP32 "
         "vector and matrix 163.4); the whole package, as SPX mode shows it (CPX partitions are not "
         "modelled), https://www.amd.com/content/dam/amd/en/documents/instinct-tech-docs/data-sheets/"
         "amd-instinct-mi300x-data-sheet.pdf"),
    Peak("MI250X / MI250 (either)", r"\bmi250x mi250", {},
         "the name covers both the MI250X (191.5 TFLOPS bf16 per GCD) and the MI250 (181.05): which "
         "one is not known from the name"),
    Peak("MI250X (one GCD)", r"\bmi250x\b", _t(bf16=191.5, fp16=191.5, fp32=47.85),
         _MI200.format("MI250X", "BF16/FP16 383, FP32 matrix 95.7",
                       "https://www.amd.com/en/products/accelerators/instinct/mi200/mi250x.html")),
    Peak("MI250 (one GCD)", r"\bmi250\b", _t(bf16=181.05, fp16=181.05, fp32=45.25),
         _MI200.format("MI250", "BF16/FP16 362.1, FP32 matrix 90.5",
                       "https://www.amd.com/en/products/accelerators/instinct/mi200/mi250.html")),
)


def normalise(name: str) -> str:
    """A device name as the patterns read it: lower case, punctuation as single spaces,
    without the vendor word. 'NVIDIA A100-SXM4-80GB' -> 'a100 sxm4 80gb'."""
    words = re.sub(r"[^a-z0-9]+", " ", name.lower()).split()
    while words and words[0] in ("nvidia", "amd"):
        words = words[1:]
    return " ".join(words)


def identify(name: str) -> Peak | None:
    """The table row for a device name (first match in table order), or None."""
    norm = normalise(name)
    return next((row for row in TABLE if re.search(row.pattern, norm)), None)


def table_peak(device_name: str, dtype: str) -> tuple[float | None, str]:
    """(dense peak FLOP/s, source) for the device torch or NVML names `device_name` and a
    dtype (bf16 | fp16 | tf32 | fp32); (None, why) when the device, or that dtype on it,
    has no sourced figure. Never another device's number."""
    if re.search(r"\bmig\b", normalise(device_name)):
        return None, f"{device_name}: a MIG slice, a fraction of the GPU whose peak the name does not give"
    row = identify(device_name)
    if row is None:
        return None, f"{device_name}: not in the peak table"
    if dtype not in row.flops:
        return None, f"{device_name}: no {dtype} figure for {row.device} ({row.source})"
    return row.flops[dtype], f"{row.device}: {row.source}"
