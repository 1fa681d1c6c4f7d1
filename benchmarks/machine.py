"""The machine a measurement ran on, described the same way by every report in ``benchmarks/``."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def _cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` of ``/proc/cpuinfo`` (Linux), or None."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text().splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return None


# (ISA class, the /proc/cpuinfo flag that defines it), best first: what decides the speed of bf16 and float32 GEMMs.
ISA_CLASSES = (("AMX", "amx_bf16"), ("AVX-512 BF16", "avx512_bf16"), ("AVX-512", "avx512f"), ("AVX2", "avx2"))


def isa_class(flags: list[str]) -> str:
    """The best of ``AMX`` (AMX tiles with bf16), ``AVX-512 BF16``, ``AVX-512``, ``AVX2`` that ``flags`` (the
    ``flags`` field of ``/proc/cpuinfo``) names, or ``older than AVX2``."""
    return next((name for name, flag in ISA_CLASSES if flag in flags), "older than AVX2")


def has_bf16_instructions(isa: str) -> bool:
    """Whether an ISA class of :func:`isa_class` computes bfloat16 GEMMs in hardware (AMX or AVX-512 BF16)."""
    return isa in ("AMX", "AVX-512 BF16")


def cpu_isa() -> dict:
    """The CPU model, its ISA class (:func:`isa_class`) and the ISA oneDNN's kernels run with in grukit's binding
    (``onednn_isa``: ``grukit.ops.onednn.cpu_isa()`` where the binding has it, else ``None``)."""
    from grukit.ops import onednn

    onednn_isa = getattr(onednn, "cpu_isa", None)
    return {
        "cpu": _cpuinfo_field("model name") or platform.processor() or "unknown CPU",
        "isa": isa_class((_cpuinfo_field("flags") or "").split()),
        "onednn_isa": onednn_isa() if onednn_isa is not None else None,
    }


def describe() -> dict:
    """CPU model, cores visible, AVX-512, torch version and thread count, Python, OS and the 1-minute load
    average now (``load_average_start``: the reports call it at their start)."""
    flags = (_cpuinfo_field("flags") or "").split()
    return {
        "cpu": _cpuinfo_field("model name") or platform.processor() or "unknown CPU",
        "cores": os.cpu_count(),
        "avx512": "avx512f" in flags,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else [float("nan")] * 3,
    }


def machine_line(info: dict | None = None) -> str:
    """:func:`describe` as one line for a report's header, e.g. ``AMD EPYC, 2 cores (AVX-512), torch 2.5.0 with 2
    thread(s), Python 3.11.7, Linux x86_64; load average 0.4 at the start``."""
    m = info or describe()
    return (
        f"{m['cpu']}, {m['cores']} cores{' (AVX-512)' if m['avx512'] else ''}, torch {m['torch']} with "
        f"{m['threads']} thread(s), Python {m['python']}, {m['system']}; load average "
        f"{m['load_average_start'][0]:.1f} at the start"
    )
