"""One active-adaptation run, in one vocabulary.

* **the run** (``active_run.ActiveRun``): its steps in order, its state saved after each, its
  lineage in MLflow; what the Prefect flow drives and what ``--resume`` continues;
* **its settings**: the ``Config`` it started with (``settings.json`` beside its state;
  ``saved.settings_hash`` says whether two runs share them);
* **its saved state** (``saved.RunState``, kept by ``saved.SavedRuns`` on disk and, with a
  tracking server, in the run's MLflow artifacts): rounds done, labels so far, the open request;
* **its steps** (``steps.RunSteps``): the science without orchestration (pretrain, select, ask,
  adapt, evaluate), also called in a plain loop by the benchmarks;
* **the list of runs** (``listing.summarise``): what ``sage-ada runs`` prints;
* **checks before a run** (``preflight``), and **a multi-GPU phase's processes**
  (``training_job``, the ``torchrun`` entry point, which builds the steps itself).
"""
