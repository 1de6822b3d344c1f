"""A simulated annotator that works through Label Studio's API as a person's browser would.

It reads the project's tasks and posts annotations with the held-back label, so the whole human
path (tasks, annotations, polling, validation) runs unattended for demos and tests. It can be
told to skip some samples, or to answer with a wrong or an unknown label.
"""
from __future__ import annotations

from datetime import datetime, timezone

from components.oracle.label_studio import choice_result, round_tasks


class AutoAnnotator:
    """``item_of``: the oracle's ``item`` (sample id → what the task shows); the annotator, like
    a person, sees only items, and looks the held-back label up through it."""

    def __init__(self, client, truth: dict[str, str], *, item_of, skip=(),
                 answers: dict[str, list[str]] | None = None, per_task: int = 1):
        self.client, self.truth, self.item_of = client, truth, item_of
        self.skip = set(skip)
        self.answers = answers or {}   # sample_id → labels to give, one annotation each
        self.per_task = per_task       # annotations of the true label (annotators_per_task)
        self.created = 0

    def annotate(self, project_id: int, round: int | None = None) -> int:
        """Annotate every task (of ``round``, where given) that has no annotation yet; returns
        how many were annotated."""
        sample_of = {self.item_of(sid): sid for sid in self.truth}
        done = 0
        for task in round_tasks(self.client, project_id, round):
            if task.annotations:
                continue
            sid = sample_of[task.data["item"]]
            lead = self._lead_time(task)
            if sid in self.skip:
                self.client.annotations.create(id=task.id, result=[], was_cancelled=True,
                                               lead_time=lead)
            else:
                for label in self.answers.get(sid, [self.truth[sid]] * self.per_task):
                    self.client.annotations.create(id=task.id, result=choice_result(label),
                                                   lead_time=lead)
            done += 1
        self.created += done
        return done

    @staticmethod
    def _lead_time(task) -> float:
        created = getattr(task, "created_at", None)
        if not created:
            return 0.0
        return max(0.0, (datetime.now(timezone.utc) - created).total_seconds())

    def __call__(self, handle: dict) -> None:
        """Hook for ``LabelStudioOracle.on_poll``: answer before each poll."""
        self.annotate(handle["project_id"], handle["round"])
