"""One active-adaptation run with its lineage and crash-safe state.

Each step records what the next one needs before it returns, so a run killed at any point
resumes from the last finished step: a saved selection is not recomputed, an open oracle
request is collected instead of re-sent, and a finished round is never repeated. Checkpoints
are kept per round (``checkpoint-r<k>.pt``), so a crash after writing one cannot be mistaken
for the previous round's.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Optional

from components.config import Config
from components.data.versioning import data_hash
from components.oracle import OracleError, OracleTimeout, check_labels, wait_over
from components.run.saved import (PendingRound, ResumeMismatch, RunState, SavedRuns, differing,
                                  settings_hash)
from components.models.checkpoints import weights_digest
from components.run.steps import RunSteps
from components.tracking.artifact_mirror import FLOW_RUN_TAG
from components.tracking.lineage import STATE_TAG, Tracker, git_commit
from components.tracking.retention import prune_rounds


log = logging.getLogger("sage_ada.run")


class ActiveRun:
    def __init__(self, cfg: Config, steps: RunSteps, tracker: Tracker, store: SavedRuns,
                 oracle, state: RunState):
        self.cfg, self.steps, self.tracker = cfg, steps, tracker
        self.store, self.oracle, self.state = store, oracle, state
        self.net = None
        self.train_seconds = 0.0
        # the round whose URL this process announced, or found answered (nothing left to tell)
        self._announced: Optional[int] = None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, cfg: Config, steps: RunSteps, oracle, *, resume: Optional[str] = None,
             flow_run_id: Optional[str] = None, store: SavedRuns | None = None,
             run_name: Optional[str] = None) -> "ActiveRun":
        """Resume ``resume`` (an MLflow run id), or the run of this Prefect flow run, or start."""
        store = store or SavedRuns()
        tracker = Tracker(cfg.experiment_name)
        state = store.load(resume) if resume else store.find_by_flow_run(flow_run_id)
        if state is not None and state.settings_hash != settings_hash(cfg):
            started = store.settings(state.run_id)
            changed = f" ({'; '.join(differing(started, cfg.model_dump()))})" if started else ""
            raise ResumeMismatch(
                f"run {state.run_id} was started with other settings than asked for now "
                f"({cfg._origin} and flags){changed}; resume it with the settings it started with (see its "
                "parameters in MLflow), or start a new run")
        if state is not None and not tracker.has_run(state.run_id):
            raise ResumeMismatch(
                f"run {state.run_id} is saved in {store.dir(state.run_id)} but not in the MLflow "
                f"store at {tracker.uri}: the store was deleted or another one is set "
                "(MLFLOW_TRACKING_URI); point MLFLOW_TRACKING_URI at the run's store, or start a "
                "new run")
        if state is None:
            lineage_tags = lineage(cfg)
            run_id = tracker.start_parent(
                params=cfg.model_dump(),
                tags={f"sage_ada.{k}": v for k, v in lineage_tags.items()},
                run_name=run_name or (f"{cfg.active.strategy} b={cfg.active.budget} "
                                      f"×{cfg.active.rounds} seed {cfg.active.seed}"))
            state = RunState(run_id=run_id, flow_run_id=flow_run_id, settings_hash=settings_hash(cfg))
            store.save_settings(run_id, cfg.model_dump())
            tracker.log_dataset(run_id, name=f"{cfg.experiment_name} manifest",
                                digest=lineage_tags["data_hash"], source=cfg.data.root)
            tracker.set_tags(run_id, {STATE_TAG: str(store.dir(run_id).resolve()),
                                      **({FLOW_RUN_TAG: flow_run_id} if flow_run_id else {})})
            store.save(state)
        else:
            if tracker.client.get_run(state.run_id).info.status != "FINISHED":
                tracker.client.update_run(state.run_id, status="RUNNING")  # KILLED or FAILED
            if flow_run_id and state.flow_run_id != flow_run_id:
                state.flow_run_id = flow_run_id
                tracker.set_tags(state.run_id, {FLOW_RUN_TAG: flow_run_id})
                store.save(state)
        store.claim(state.run_id)
        if hasattr(oracle, "bind"):  # e.g. one Label Studio project per pipeline run
            oracle.bind(state.run_id)
        return cls(cfg, steps, tracker, store, oracle, state)

    @property
    def run_id(self) -> str:
        return self.state.run_id

    def _checkpoint(self, round: int) -> Path:
        return self.store.dir(self.run_id) / f"checkpoint-r{round}.pt"

    def _load_checkpoint(self, round: int):
        """The network after ``round``, from this worker's copy or the run's artifacts."""
        return self.steps.load(self.store.file(self.run_id, self._checkpoint(round).name))

    def _save_state(self) -> None:
        self.store.save(self.state)

    # ------------------------------------------------------------------ steps
    def pretrain(self) -> dict:
        """Round 0: the UDA model, evaluated and logged (skipped when already done)."""
        if self.state.rounds_done >= 0:
            self.net = self._load_checkpoint(self.state.rounds_done)
            return self.state.history[-1]
        net, seconds, cached = self.steps.pretrain()
        self.net = net
        self.train_seconds = seconds
        return self._finish_round(0, labelled=dict(self.state.labelled), selection=[],
                                  select_seconds=0.0)

    def select(self, round: int) -> list[str]:
        pending = self.state.pending
        if pending is not None and pending.round == round:
            return pending.selected
        ids, scores, seconds = self.steps.select(self.net, self.state.labelled, round)
        self.state.pending = PendingRound(round, ids, scores, seconds)
        self._save_state()
        return ids

    def ask(self, round: int, announce: Optional[Callable[[int, str], None]] = None) -> None:
        """Send the round's selection to the oracle (once). Where people answer, each wait (a
        resumed one too) first announces the round's URL: printed, tagged on the MLflow run,
        and passed to ``announce`` (the flow makes it a link in the Prefect UI)."""
        pending = self.state.pending
        if pending.labels is not None:
            return
        if pending.handle is None:
            context = self.steps.request_context(self.net, pending.selected, pending.scores)
            pending.suggestions = {sid: [c["prediction"], c["confidence"]]
                                   for sid, c in context.items()}
            pending.handle = self.oracle.request(pending.selected, round, context=context)
        if pending.asked_at is None:  # the wait (re)starts: first asked, or resumed after a timeout
            pending.asked_at = time.time()
            self._save_state()
        url = pending.handle.get("url") if isinstance(pending.handle, dict) else None
        if url and self._announced != round:  # once per wait: a suspended run asks, then collects
            self._announced = round
            print(f"annotators: label round {round} ({len(pending.selected)} images) at {url}",
                  flush=True)
            self.tracker.set_tags(self.run_id, {"sage_ada.annotation_url": url})
            if announce is not None:
                announce(round, url)

    def deadline(self, timeout: float) -> Optional[float]:
        """When the round's wait times out (epoch seconds); None under ``on_timeout: wait``."""
        if self.cfg.active.oracle == "label_studio" and self.cfg.label_studio.on_timeout == "wait":
            return None
        return (self.state.pending.asked_at or time.time()) + timeout

    def can_collect(self, timeout: float) -> bool:
        """Whether the round can be collected without waiting: the oracle finds every request
        answered (``complete``: the same definition the webhook receiver resumes on), or the
        wait timed out (collecting then applies ``on_timeout``)."""
        pending = self.state.pending
        if pending.labels is not None or not hasattr(self.oracle, "complete"):
            return True
        if wait_over(self.deadline(timeout)) or self.oracle.complete(pending.handle):
            self._announced = pending.round  # a resumed run does not post the round's link again
            return True
        return False

    def watch(self, flow_run_id: str) -> None:
        """Have the oracle tell the receiver of infra/webhooks/ (``label_studio.webhook_url``)
        of each answer to the round, so it resumes flow run ``flow_run_id`` once the round is
        answered (or its wait times out: ``deadline``, which the flow keeps in Prefect)."""
        self.oracle.watch(self.state.pending.handle, self.cfg.label_studio.webhook_url,
                          flow_run_id)

    def wait_tag(self, timeout: float) -> str:
        """The round this run waits on, as its flow run's tag in Prefect (``wait_tag``)."""
        return self.oracle.wait_tag(self.state.pending.handle, self.deadline(timeout))

    def unwatch(self) -> None:
        """The round is collected: no more calls to the receiver for it."""
        self.oracle.unwatch(self.state.pending.handle, self.cfg.label_studio.webhook_url)

    def annotate(self, round: int, timeout: float,
                 announce: Optional[Callable[[int, str], None]] = None) -> dict[str, str]:
        """Ask the oracle (unless asked already), then wait what is left of ``timeout``."""
        pending = self.state.pending
        if pending.labels is not None:
            self._close(pending)  # again after a crash between collecting and closing
            return pending.labels
        self.ask(round, announce)
        deadline = self.deadline(timeout)
        left = timeout if deadline is None else max(0.0, deadline - time.time())
        try:
            labels = self.oracle.collect(pending.handle, left)
        except OracleTimeout:
            pending.asked_at = None  # a resumed run waits the whole timeout again
            self._save_state()
            raise
        pending.labels = check_labels(pending.selected, labels, self.steps.classes)
        if hasattr(self.oracle, "describe"):
            pending.details = self.oracle.describe(pending.handle)
        self._save_state()
        self._close(pending)
        return pending.labels

    def _close(self, pending) -> None:
        """Skipped and unanswered requests leave the annotators' queue once the round's labels
        are saved (they are back in the pool)."""
        if hasattr(self.oracle, "close"):
            self.oracle.close(pending.handle)

    def corrections(self) -> dict[str, dict]:
        """Earlier rounds' labels that annotators changed since they were collected, read once
        per round before its adaptation (and kept, so a retried adapt trains on the same)."""
        pending = self.state.pending
        if pending.corrections is None:
            pending.corrections = self._read_corrections()
            for sid, c in pending.corrections.items():
                log.warning("round %d: %s was relabelled from %s to %s by annotator %s; "
                            "training uses %s from now on", pending.round, sid, c["old"],
                            c["new"], c["by"], c["new"])
            self._save_state()
        return pending.corrections

    def _read_corrections(self) -> dict[str, dict]:
        if not hasattr(self.oracle, "relabelled"):
            return {}
        changed = self.oracle.relabelled(self.state.labelled)
        valid = check_labels(sorted(changed), {sid: c["new"] for sid, c in changed.items()},
                             self.steps.classes)
        return {sid: changed[sid] for sid in valid}

    def _labelled_now(self) -> dict[str, str]:
        pending = self.state.pending
        corrected = {sid: c["new"] for sid, c in self.corrections().items()}
        return {**self.state.labelled, **corrected, **pending.labels}

    def adapt(self, round: int) -> None:
        """Always from the previous round's checkpoint, so a retried adapt is the same adapt."""
        self.net = self._load_checkpoint(round - 1)
        self.train_seconds = self.steps.adapt(self.net, self._labelled_now(), round)

    def evaluate(self, round: int) -> dict:
        pending = self.state.pending
        labelled = self._labelled_now()
        selection = [{"round": round, "sample_id": sid, "score": score,
                      "label": pending.labels.get(sid, ""),
                      **{k: pending.details.get(sid, {}).get(k) for k in
                         ("annotator", "lead_time_s", "n_annotations", "skipped", "agreement",
                          "tied")},
                      **suggestion_columns(pending.suggestions.get(sid), pending.labels.get(sid))}
                     for sid, score in zip(pending.selected, pending.scores)]
        judged = [r["accepted_suggestion"] for r in selection
                  if r.get("accepted_suggestion") is not None]
        agreements = [r["agreement"] for r in selection
                      if r["agreement"] is not None and (r["n_annotations"] or 0) > 1]
        selection += correction_rows(round, pending.corrections)
        return self._finish_round(round, labelled=labelled, selection=selection,
                                  select_seconds=pending.select_seconds,
                                  n_corrected=len(pending.corrections), annotation={
                                      "suggestions_accepted": mean_or_none(judged),
                                      "annotator_agreement": mean_or_none(agreements)})

    def _finish_round(self, round: int, *, labelled: dict, selection: list[dict],
                      select_seconds: float, n_corrected: int = 0,
                      annotation: Optional[dict] = None) -> dict:
        """``annotation``: the round's figures on its annotators (share of suggestions accepted,
        mean agreement where several labelled a sample); absent ones are left out."""
        annotation = {k: v for k, v in (annotation or {}).items() if v is not None}
        result = self.steps.evaluate(self.net)
        row = {"round": round, "n_labels": len(labelled), "accuracy": result["accuracy"],
               "select_seconds": round_(select_seconds), "train_seconds": round_(self.train_seconds),
               **{k: round_(v) for k, v in annotation.items()}, "weights": weights_digest(self.net)}
        history = [h for h in self.state.history if h["round"] < round] + [row]
        self.steps.save(self.net, self._checkpoint(round))
        self.store.keep(self.run_id, self._checkpoint(round))
        self.tracker.log_round(
            self.run_id, round=round,
            metrics={"accuracy": row["accuracy"], "n_labels": row["n_labels"],
                     "n_corrected": n_corrected, **annotation,
                     "select_seconds": select_seconds, "train_seconds": self.train_seconds},
            per_class=result["per_class"], selection=selection, model=self.net.cpu(),
            example=self.steps.example_input(self.net), history=history)
        self.state.labelled, self.state.history = labelled, history
        self.state.rounds_done, self.state.pending = round, None
        self._save_state()
        old = self._checkpoint(round - 2)
        if round >= 2 and old.exists():
            old.unlink()
        self._prune(round)
        return row

    def _prune(self, round: int) -> None:
        """``tracking.keep_round_models``: the store keeps the last k rounds (and registered
        versions). The round is done whatever happens here: a failure is a warning, and the
        next round's pass removes what this one left."""
        from mlflow.exceptions import MlflowException

        keep = self.cfg.tracking.keep_round_models
        if not keep:
            return
        try:
            prune_rounds(self.tracker.client, self.tracker.experiment_id, self.run_id,
                         latest=round, keep=keep)
        except (MlflowException, OSError) as err:
            log.warning("round %d: could not remove the models of rounds before the last %d "
                        "from the tracking store (%s); the next round tries again", round, keep,
                        err)

    def failed(self) -> None:
        """Mark the run FAILED in MLflow as it stops on an error (it stays resumable: its
        finished steps are saved), so the UI does not show it RUNNING until `sage-ada runs`
        marks it KILLED. Best effort: the error being raised is the one to tell."""
        try:
            self.tracker.client.set_terminated(self.run_id, status="FAILED")
        except Exception:  # noqa: BLE001 - the store may be what failed
            pass

    def finish(self) -> Optional[str]:
        """Register the last model. Labels corrected after the last adaptation cannot be
        trained on any more: they are logged (``corrections_after_last_round.json`` on the run,
        with a warning), and the run's labelled set keeps what the model was trained on."""
        import httpx

        try:
            late = self._read_corrections()
        except (OracleError, httpx.TransportError) as err:  # registering matters more
            log.warning("could not read late label corrections (%s); registering anyway", err)
            late = {}
        if late:
            log.warning("%d labels were corrected in the annotation tool after the last "
                        "adaptation; the registered model did not train on them (listed in "
                        "corrections_after_last_round.json of run %s)", len(late), self.run_id)
            self.tracker.log_corrections(self.run_id, correction_rows(
                self.state.rounds_done, late), "corrections_after_last_round.json")
        return self.tracker.finish(self.run_id, registered_model=self.cfg.registered_model_name,
                                   lineage={**lineage(self.cfg),
                                            "experiment": self.cfg.experiment_name},
                                   register=self.cfg.active.rounds > 0)


def lineage(cfg: Config) -> dict[str, str]:
    """Where a run's results come from: data version, code version and the key choices."""
    import torch

    return {"data_hash": data_hash(root=cfg.data.root, manifest=cfg.data.manifest),
            "git_commit": git_commit(),
            "strategy": cfg.active.strategy, "seed": str(cfg.active.seed),
            "regulariser": cfg.train.regulariser, "adversarial": cfg.train.adversarial,
            # the CPU kernels that computed it: numbers agree exactly only where these agree
            "cpu_kernels": f"{cfg.train.cpu_kernels} ({torch.backends.cpu.get_cpu_capability()}, "
                           f"{torch.get_num_threads()} threads)"}


def suggestion_columns(suggestion: Optional[list], label: Optional[str]) -> dict:
    """The model's guess beside the label, and whether the label is that guess: a high share of
    accepted guesses from a weak model means annotators anchor on it (label_studio.show_guess)."""
    if not suggestion:
        return {}
    guess, confidence = suggestion
    return {"suggested": guess, "suggestion_confidence": confidence,
            "accepted_suggestion": None if not label else label == guess}


def correction_rows(round: int, corrections: dict[str, dict]) -> list[dict]:
    """Corrections as rows beside a round's selection: sample, new label, old label, who, when."""
    return [{"round": round, "sample_id": sid, "score": None, "label": c["new"],
             "corrected_from": c["old"], "corrected_by": c["by"], "corrected_at": c["at"]}
            for sid, c in corrections.items()]


def mean_or_none(values: list) -> Optional[float]:
    return sum(values) / len(values) if values else None


def round_(x: float) -> float:
    return float(f"{x:.3f}")
