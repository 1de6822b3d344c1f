"""Which CPU kernels compute a run: one path every x86-64 machine shares, or each CPU's fastest.

Float rounding depends on the kernels: ATen's vectorised loops (AVX2 or AVX-512), MKL's GEMM
branch, oneDNN's convolutions (picked per CPU), and how many threads split a sum. Adversarial
pretraining amplifies a last-bit difference into points of accuracy (measured by
``benchmarks/cpu_numerics.py``), so the same command gave other numbers on another CPU.

``portable`` pins each library to a path that every x86-64 CPU with AVX2 runs (Intel and AMD)
and fixes the thread count; ``native`` lets each library choose. The libraries read these
settings once, when their first kernel runs, so they are applied at process start: by the
``sage-ada`` command before torch loads, and checked again when a run's steps open (``RunSteps``).
"""
from __future__ import annotations

import os
import platform

PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",   # ATen's vectorised loops: AVX2, never AVX-512
    "MKL_CBWR": "COMPATIBLE",        # MKL's single code path for every x86 CPU, Intel or AMD
    "ONEDNN_MAX_CPU_ISA": "AVX2",    # oneDNN's convolutions: AVX2 kernels, no AVX-512 or AMX
}


class NumericsError(RuntimeError):
    """Portable kernels were asked for after torch had already chosen others."""


def pin_environment(kernels: str, threads: int | None) -> None:
    """Set the libraries' switches in this process's environment (inherited by children).

    Call before torch runs a kernel; settings a user exported explicitly are kept."""
    if kernels == "portable":
        for key, value in PORTABLE_ENV.items():
            os.environ.setdefault(key, value)
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        os.environ.setdefault("MKL_NUM_THREADS", str(threads))


def apply(kernels: str, threads: int | None) -> None:
    """Pin the environment, fix torch's thread count and check the pin took effect."""
    pin_environment(kernels, threads)
    import torch

    if threads:
        torch.set_num_threads(threads)
    if kernels == "portable" and platform.machine().lower() in ("x86_64", "amd64"):
        chosen = torch.backends.cpu.get_cpu_capability()
        if chosen not in ("AVX2", "DEFAULT", "NO AVX"):
            raise NumericsError(
                f"train.cpu_kernels is portable but torch already runs {chosen} kernels in this "
                "process; start it through `sage-ada`, or export "
                + " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items())
                + " before Python starts (or set train.cpu_kernels: native)")
