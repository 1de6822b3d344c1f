"""Portable CPU kernels: a few training steps give the same bits whatever kernels this CPU offers.

Each probe is a fresh process (the libraries choose their kernels once per process) that runs
real update steps of eq. 10 on generated images and prints a hash of the weights.
"""
from __future__ import annotations

import os
import platform

import pytest

from components import numerics
from tests.conftest import fresh_python

PROBE = r"""
import hashlib, sys
from components import numerics
from components.config import Config
kernels, threads = sys.argv[1], int(sys.argv[2])
numerics.apply(kernels, threads)
import torch
from components.adaptation.trainer import make_optimizer, update_step
from components.models import build_network
cfg = Config()
torch.manual_seed(0)
net = build_network(cfg, 10)
opt = make_optimizer(net, cfg.train)
g = torch.Generator().manual_seed(0)
for _ in range(12):
    x = torch.rand(3, 64, 1, 28, 28, generator=g) * 2 - 1
    y = torch.randint(10, (2, 64), generator=g)
    update_step(net, opt, x[0], y[0], x[1][:8], y[1][:8], x[2], adversarial="tsf",
                regulariser="sum", lambda_adv=0.3, lambda_entropy=0.1,
                target_share=0.5)
h = hashlib.sha256()
for t in net.state_dict().values():
    h.update(t.detach().numpy().tobytes())
print("HASH", h.hexdigest(), torch.backends.cpu.get_cpu_capability())
"""

# The switches that select other kernels; the probe's own process must start without them.
SWITCHES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def without_switches() -> dict:
    return {k: v for k, v in os.environ.items() if k not in SWITCHES}


def probe(kernels: str, threads: int = 2, **env) -> tuple[str, str]:
    out = fresh_python(PROBE, kernels, str(threads), env={**without_switches(), **env})
    assert out.returncode == 0, out.stderr[-2000:]
    _, digest, capability = out.stdout.split()[-3:]
    return digest, capability


def cpu_vendor() -> str:
    """``vendor_id`` of /proc/cpuinfo: GenuineIntel, AuthenticAMD, ..."""
    for line in open("/proc/cpuinfo"):
        if line.startswith("vendor_id"):
            return line.split(":", 1)[1].strip()
    return "unknown"


needs_avx512 = pytest.mark.skipif(
    platform.machine() != "x86_64" or "avx512f" not in open("/proc/cpuinfo").read(),
    reason="provoking other kernels needs an x86-64 CPU with AVX-512")


# What an AVX2-only CPU (AMD EPYC before Zen 4, say) offers the libraries, emulated here.
AVX2_MACHINE = dict(ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2",
                    ONEDNN_MAX_CPU_ISA="AVX2")


@needs_avx512
def test_native_kernels_differ_between_instruction_sets():
    """The probe is sensitive: other kernels round differently within 12 steps, and on an Intel
    CPU MKL's alone too (MKL takes its AVX-512 paths on Intel CPUs only: on an AMD one it runs
    the same code whatever it is offered, measured on an EPYC with AVX-512)."""
    native = probe("native")
    avx2 = probe("native", **AVX2_MACHINE)
    assert native[1] == "AVX512" and avx2[1] == "AVX2"
    assert native[0] != avx2[0]
    if cpu_vendor() == "GenuineIntel":
        assert probe("native", MKL_ENABLE_INSTRUCTIONS="AVX2")[0] != native[0]


@needs_avx512
def test_portable_kernels_give_an_avx2_machine_the_same_bits():
    """Pinned, this AVX-512 machine computes what an AVX2-only one does, whichever library
    is offered less, and OpenMP told to use one thread changes no bit either."""
    reference = probe("portable")
    assert reference[1] == "AVX2"
    assert probe("portable", **AVX2_MACHINE) == reference
    assert probe("portable", MKL_ENABLE_INSTRUCTIONS="AVX2") == reference
    assert probe("portable", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1") == reference


def clear_switches(monkeypatch):
    """Unset every switch for this test only: setting each first makes monkeypatch record it,
    so what ``pin_environment`` adds is removed again afterwards instead of reaching the
    tests that run later in this process (and the processes they start)."""
    for key in SWITCHES:
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)


def test_pin_keeps_what_the_user_exported(monkeypatch):
    clear_switches(monkeypatch)
    monkeypatch.setenv("MKL_CBWR", "AUTO")
    numerics.pin_environment("portable", 3)
    assert os.environ["MKL_CBWR"] == "AUTO"
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2"
    assert os.environ["OMP_NUM_THREADS"] == "3"


def test_native_pins_nothing(monkeypatch):
    clear_switches(monkeypatch)
    numerics.pin_environment("native", None)
    assert not any(key in os.environ for key in SWITCHES)


@needs_avx512
def test_portable_asked_too_late_is_a_clear_error():
    """torch already ran AVX-512 kernels: the run must not claim portable numbers."""
    code = ("import torch; torch.ones(64).sum(); from components import numerics; "
            "numerics.apply('portable', 2)")
    out = fresh_python(code, env=without_switches())
    assert out.returncode != 0
    assert "already runs AVX512 kernels" in out.stderr and "sage-ada" in out.stderr
