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
