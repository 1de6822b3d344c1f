"""The reproduction protocol behind ``docs/results.md``, as a library.

``benchmarks/reproduce.py`` runs it and ``benchmarks/pick_analysis.py`` replays part of it; both
import it from here, so the arms, the statistics and the ledger have one definition:

* ``arms``: what is run (arms, floors, presets) and the settings of each job;
* ``stats``: paired intervals, equivalence tests, areas and the verdicts read from them;
* ``ledger``: the finished runs kept in the repository, per ``components/`` code;
* ``runner``: running (or reading back) a preset's jobs in worker processes;
* ``report``: the page, its tables and its figures.
"""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # params.yaml, components/, docs/ and the ledger
