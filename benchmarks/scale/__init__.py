"""Parts of ``benchmarks/team_scale.py``: one module per part, each ``run(args, work) -> dict``
of figures made by ``figure``."""
from __future__ import annotations

import resource
from typing import Optional


def figure(value: float, unit: str, *, at_most: Optional[float] = None, note: str = "") -> dict:
    """One measured figure, with its target where the issue sets one (``at_most``)."""
    out = {"value": round(float(value), 4), "unit": unit}
    if at_most is not None:
        out.update(target=f"<= {at_most:g} {unit}", met=bool(value <= at_most))
    if note:
        out["note"] = note
    return out


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children), in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def measured(argv: list[str], *, cwd, env: Optional[dict] = None, log=None) -> dict:
    """Run ``argv`` in a fresh process; return its wall seconds, its own peak RSS (MiB, from
    ``wait4``: this child and the children it waited for, nothing measured before) and exit
    code. Output goes to ``log`` (a path; default: discarded), so a long run cannot block
    on a full pipe. A failed command raises ``RuntimeError`` with the end of its output."""
    import os
    import subprocess
    import time
    from pathlib import Path

    out = open(log, "w") if log else subprocess.DEVNULL
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            out.close()
    if proc.returncode != 0:
        tail = Path(log).read_text()[-3000:] if log else ""
        raise RuntimeError(f"{' '.join(map(str, argv))} exited with {proc.returncode}:\n{tail}")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "rc": proc.returncode}
