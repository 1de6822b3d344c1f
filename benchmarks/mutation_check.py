"""A small mutation check over the training step and the query strategies: break the code on
purpose, run the fast maths tests, and count the mutants no test notices (survivors).

Two kinds of mutants, each applied to a scratch copy of components/ and tests/ (the checkout is
never touched):

* the **named** ones: the mistakes that matter in this method (no gradient reversal, reversal
  with the wrong sign, TSF's weights not detached or uniform, CLUE without its entropy weights,
  DANN's ramp on the whole adversarial loss, POP off, ...). Every one must be killed.
* **operators**: every ``+``/``-`` swap, ``*``/``/`` swap and dropped ``.detach()`` in
  components/adaptation/losses.py, components/models/grl.py and components/query/*.py (up to
  ``--max-operators``), for a survival rate beyond the named list.

    python benchmarks/mutation_check.py [--max-operators 40]

Writes ``benchmarks/results/mutation_check.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_training_step.py", "tests/test_losses.py", "tests/test_sage.py",
         "tests/test_baselines.py"]

NAMED = [  # (name, file, code, mutated code)
    ("no gradient reversal in the training step", "components/adaptation/losses.py",
     "reverse_gradient(torch.cat([z_source, z_target]), reversal)",
     "torch.cat([z_source, z_target])"),
    ("gradient reversal with the wrong sign", "components/models/grl.py",
     "return -ctx.coeff * grad, None", "return ctx.coeff * grad, None"),
    ("TSF's class weights not detached", "components/adaptation/losses.py",
     "F.softmax(logits_target.float(), 1).detach())", "F.softmax(logits_target.float(), 1))"),
    ("TSF's class weights uniform, not predicted", "components/adaptation/losses.py",
     "F.softmax(logits_target.float(), 1)",
     "torch.full_like(logits_target.float(), 1.0 / logits_target.shape[1])"),
    ("CLUE without its entropy weights", "components/query/clue.py",
     "weights=h + 1e-8", "weights=None"),
    ("DANN's ramp on the whole adversarial loss", "components/adaptation/trainer.py",
     "            reversal = 2.0 / (1.0 + math.exp(",
     "            lam *= 2.0 / (1.0 + math.exp("),
    ("POP off in Sage", "components/query/sage.py",
     'register("sage", requires="class")(_sage(pop=True,',
     'register("sage", requires="class")(_sage(pop=False,'),
    ("POP with a signed projection", "components/query/sage.py",
     "lam = dots.abs() / norm_sq.clamp_min(POP_EPS)", "lam = dots / norm_sq.clamp_min(POP_EPS)"),
    ("Ω_S+T without the target labels", "components/adaptation/losses.py",
     "return _ce(out.logits_source, out.y_source) + _ce(out.logits_labelled, out.y_labelled)",
     "return _ce(out.logits_source, out.y_source)"),
    ("MME's entropy with the wrong sign", "components/adaptation/losses.py",
     "return omega_sum(out, classifier, lambda_entropy) - lambda_entropy * h",
     "return omega_sum(out, classifier, lambda_entropy) + lambda_entropy * h"),
    ("entropy query ranks the least uncertain", "components/query/uncertainty.py",
     "return top(entropy_of(p), budget)", "return top(-entropy_of(p), budget)"),
]

OPERATOR_FILES = ["components/adaptation/losses.py", "components/models/grl.py",
                  *sorted(str(p.relative_to(REPO)) for p in (REPO / "components/query").glob("*.py")
                          if p.name != "__init__.py")]
SWAPS = [(r"(?<=[\w\)\]]) \+ (?=[\w\(])", " - "), (r"(?<=[\w\)\]]) - (?=[\w\(])", " + "),
         (r"(?<=[\w\)\]]) \* (?=[\w\(])", " / "), (r"(?<=[\w\)\]]) / (?=[\w\(])", " * "),
         (r"\.detach\(\)", "")]


def operator_mutants(limit: int) -> list[tuple[str, str, str, str, int]]:
    """(name, file, line text, mutated line, line number) for code lines (not docstrings)."""
    found = []
    for rel in OPERATOR_FILES:
        in_doc = False
        for number, line in enumerate((REPO / rel).read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.count('"""') == 1:
                in_doc = not in_doc
                continue
            if in_doc or stripped.startswith(("#", '"""', "r\"\"\"")) or not stripped:
                continue
            code = line.split("  #")[0]
            for pattern, repl in SWAPS:
                for m in re.finditer(pattern, code):
                    mutated = code[:m.start()] + repl + code[m.end():] + line[len(code):]
                    found.append((f"{rel}:{number}: {m.group().strip() or '.detach()'} → "
                                  f"{repl.strip() or 'nothing'}", rel, line, mutated, number))
    return found[:limit]


def run_tests(tree: Path) -> bool:
    """True when the tests fail (the mutant is killed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                          "--timeout", "300", *TESTS], cwd=tree, env=env, capture_output=True,
                         text=True, timeout=900)
    return out.returncode != 0


def check(tree: Path, rel: str, replace) -> bool:
    path = tree / rel
    original = path.read_text()
    mutated = replace(original)
    if mutated == original:
        raise SystemExit(f"mutation did not apply to {rel}: the code it names has changed")
    path.write_text(mutated)
    try:
        return run_tests(tree)
    finally:
        path.write_text(original)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-operators", type=int, default=40)
    args = ap.parse_args()
    results = {"named": [], "operators": []}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        for name in ("components", "tests"):
            shutil.copytree(REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "params.yaml", tree / "params.yaml")
        if run_tests(tree):
            raise SystemExit("the tests fail without any mutation; fix them first")
        for name, rel, code, mutated in NAMED:
            killed = check(tree, rel, lambda text: text.replace(code, mutated, 1))
            results["named"].append({"mutation": name, "file": rel, "killed": killed})
            print(f"{'killed  ' if killed else 'SURVIVED'} {name}", flush=True)
        for name, rel, line, mutated, number in operator_mutants(args.max_operators):
            def replace(text, number=number, mutated=mutated):
                lines = text.splitlines(keepends=True)
                lines[number - 1] = mutated + "\n"
                return "".join(lines)
            killed = check(tree, rel, replace)
            results["operators"].append({"mutation": name, "killed": killed})
            print(f"{'killed  ' if killed else 'SURVIVED'} {name}", flush=True)
    summary = {kind: {"mutants": len(rows), "survivors": sum(not r["killed"] for r in rows)}
               for kind, rows in results.items()}
    out = {"command": "python benchmarks/mutation_check.py "
                      f"--max-operators {args.max_operators}",
           "tests": TESTS, "summary": summary, "seconds": round(time.time() - started), **results}
    (REPO / "benchmarks" / "results" / "mutation_check.json").write_text(
        json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(summary))
    return 1 if summary["named"]["survivors"] else 0


if __name__ == "__main__":
    sys.exit(main())
