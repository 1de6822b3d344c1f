"""People as the oracle: each round's selection becomes tasks in a Label Studio project.

* one project per pipeline run (title: ``<experiment> · <run id>``), with an image-classification
  labelling config generated from the class names, the instructions of ``params.yaml``, and
  small images drawn pixelated (not blurred when enlarged);
* nothing shown to annotators reveals a label: a task carries an opaque ``item`` (a hash of run
  and sample id) instead of the ``sample_id``, and its image by reference (``media``: a copy
  named by the item, served by Label Studio's local-files storage) or inline, never by its path,
  since paths name the class folder (``optdigits/6/…``);
* each check asks Label Studio only for the round it checks (a filter on ``data.round``, paged),
  not for every task of the project;
* import is keyed by ``item``: existing tasks are looked up first, so a retry or a resume
  never creates a duplicate task (Label Studio itself does not deduplicate);
* each task carries the round, the query score, and the model's guess as a prediction (with
  its probability as score; the project follows each round's model version, so the guess is
  pre-filled in every round), so annotators see it and can sort by score;
* every class has the keyboard shortcut it shows: a one-character class name is its own key;
* waiting is polling (webhooks are fire-and-forget): every ``poll_interval_s`` until every task
  is resolved or the timeout, where ``on_timeout`` decides: ``wait`` (keep polling), ``fail``
  (raise; the tasks stay and a resumed run keeps waiting for them) or ``partial`` (return what is
  labelled; the rest goes back to the pool);
* a server that stops answering is waited out (a log line per try) until the round's timeout,
  then one error says how to restart it and resume;
* before each adaptation and when the run ends, the earlier rounds' annotations are read again,
  so a label an annotator corrects later is used from then on (and logged as a correction:
  sample, old and new label, who and when);
* a skipped (cancelled) task goes back to the pool unlabelled; when its round closes, it and any
  task left unanswered (``partial``) leave the queue, so a later selection gets a fresh task;
  a label outside the class list is not an answer (``task_answered``, the one definition the
  run and the webhook receiver share): it never reaches training, is named in the log (and in a
  timeout's error), and its task waits, annotation kept, until someone changes it to a class;
  ``annotators_per_task`` people answer each task; their labels resolve by ``majority`` or
  ``latest``, credited to who gave the label (the last to edit it), with the share of the labels
  that agree; a majority tie is settled by ``ties``: ``ask_another`` (the task is served to one
  more annotator), ``latest`` or ``fail``;
* a label is required to submit (the choices are ``required``, with a message that says how to
  get the guess back), and the instructions (behind Label Studio's "Instructions" buttons, not
  a modal over each task) say how to accept the pre-selected guess; an annotation without a
  class that still arrives (API, older project) is no answer either: the run (and the
  receiver) asks again, deleting it so the task is back in the queue, and says so in the log
  and on the round's notice, naming the task and who;
* the project's description says which round is ready and how many images it holds, so
  annotators see it on Label Studio's project list;
* a deployed run can wait without a process (``label_studio.wait: suspend``): ``watch`` asks
  Label Studio to call the receiver of ``infra/webhooks/`` on each annotation of the run's
  project, with the flow run and round in the URL; the receiver resumes the flow run once
  ``round_status`` finds every task of the round answered, by the same ``task_answered`` the
  resumed run checks with ``complete``: a label outside the class list keeps both waiting, so
  nothing resumes and re-suspends in a loop. (One exception, once per tie: under
  ``ties: ask_another`` only the run raises a tied task's overlap, so the receiver may resume
  it for a tie that the run then sends to one more annotator, suspending again.)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional
from xml.sax.saxutils import escape, quoteattr

from tqdm.auto import tqdm

from components.oracle.base import OracleError, OracleTimeout
from components.oracle.media import MediaFolder, S3Media, image_data_uri

log = logging.getLogger("sage_ada.label_studio")

START_HINT = ("start it with `infra/label-studio/server.sh start` (install it once with "
              "`infra/label-studio/install.sh`), or set label_studio.url")


def hotkeys_for(classes: list[str], explicit: dict[str, str] | None = None) -> dict[str, str]:
    """The key that picks each class: ``label_studio.hotkeys``, else its own character where its
    name is one character. Without them Label Studio numbers the choices 1…9, 0 by position,
    so on digits pressing 3 picked class "2". Other classes keep Label Studio's numbering,
    which it shows on their buttons."""
    explicit = {str(k): str(v) for k, v in (explicit or {}).items()}
    unknown = sorted(set(explicit) - set(classes))
    if unknown:
        raise OracleError(f"label_studio.hotkeys names classes that do not exist: {unknown}; "
                          f"the classes are {classes}")
    keys = {c: explicit.get(c, c) for c in classes if c in explicit or len(c) == 1}
    taken: dict[str, str] = {}
    for c, key in keys.items():
        if key in taken:
            raise OracleError(f"classes {taken[key]!r} and {c!r} share the hotkey {key!r}; give "
                              "them different keys in label_studio.hotkeys")
        taken[key] = c
    return keys


# What Label Studio says when Submit (or Ctrl+Enter) finds no class picked: the Choices are
# ``required``, so an annotation without a class cannot be submitted from its page. Pressing the
# key of the pre-selected guess un-ticks it, which is how such annotations were made (issue 30).
REQUIRED_MESSAGE = ("No label is selected, so this image cannot be submitted yet. Pick its label "
                    "by click or by its key, then submit. Pressing the key of a selected label "
                    "un-ticks it: if the pre-selected guess was right, press its key again. Skip "
                    "if you cannot tell.")


def label_config(classes: list[str], hotkeys: dict[str, str] | None = None, *,
                 pixelated: bool = False) -> str:
    """The labelling view: the image (``pixelated``: enlarged without blur, for small images),
    then one choice per class with its hotkey; a choice is required to submit
    (``REQUIRED_MESSAGE`` says so; Skip stays possible)."""
    keys = hotkeys_for(classes, hotkeys)
    choices = "\n".join(f"    <Choice value={quoteattr(c)}"
                        + (f" hotkey={quoteattr(keys[c])}" if c in keys else "") + "/>"
                        for c in classes)
    image = ('<Image name="image" value="$image" zoom="true"'
             + (' smoothing="false" width="280px"' if pixelated else "") + "/>")
    return (f'<View>\n  {image}\n'
            '  <Choices name="label" toName="image" choice="single" showInLine="true"\n'
            f'           required="true" requiredMessage={quoteattr(REQUIRED_MESSAGE)}>\n'
            f"{choices}\n  </Choices>\n</View>")


def annotator_instructions(instructions: str, *, show_guess: bool = True) -> str:
    """What the project shows as its instructions: ``label_studio.instructions``, then how to
    answer in this labelling view (which keys pick what, how to accept the pre-selected guess,
    that a label is required, what Skip does). Label Studio shows them behind the
    "Instructions" buttons of the labelling page and the project's header, not over each task
    (``show_instruction`` is off: that modal let digit keys reach the choices behind it)."""
    how = ["Pick the label by click or by its key (shown on its button), then Submit (or "
           "Ctrl+Enter)."]
    if show_guess:
        how.append("The model's guess is pre-selected: if it is right, just Submit (or "
                   "Ctrl+Enter); pressing its key would un-tick it.")
    how.append("An image cannot be submitted without a label; Skip when you cannot tell (the "
               "image goes back to the pool).")
    text = f"<p><b>How to answer.</b> {escape(' '.join(how))}</p>"
    return f"{instructions.strip()}\n{text}" if instructions.strip() else text


def item_id(run_id: str, sample_id: str) -> str:
    """What annotators see of a sample: stable for a run, says nothing of its class or file."""
    return hashlib.sha256(f"{run_id}\0{sample_id}".encode()).hexdigest()[:12]


def choice_result(label: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "image", "type": "choices",
             "value": {"choices": [label]}}]


def read_api_key(credentials: str | Path) -> str:
    """``LABEL_STUDIO_API_KEY`` from the environment, else the server script's credentials file."""
    key = os.environ.get("LABEL_STUDIO_API_KEY")
    if key:
        return key
    path = Path(credentials)
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("LABEL_STUDIO_USER_TOKEN="):
                return line.split("=", 1)[1].strip()
    raise OracleError(f"no Label Studio API token: set LABEL_STUDIO_API_KEY or {START_HINT} "
                      f"(it writes {path})")


def connect(url: str, api_key: str):
    """A client, checked against the server, with an error that says how to start it."""
    import httpx
    from label_studio_sdk.client import LabelStudio

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as err:
        raise OracleError(f"Label Studio is not reachable at {url} ({err.__class__.__name__}); "
                          f"{START_HINT}") from None
    client = LabelStudio(base_url=url, api_key=api_key, timeout=60)
    try:
        client.users.whoami()
    except Exception as err:  # 401/403: wrong token
        raise OracleError(f"Label Studio at {url} refused the API token ({err}); check "
                          "LABEL_STUDIO_API_KEY or the credentials file") from None
    return client


# ------------------------------------------------------------------ a round's answers
# The one place that says what an annotation counts as and when a task, and a round, is
# answered. The run (``LabelStudioOracle.poll``, ``complete``, ``collect``) and the webhook
# receiver (``round_status``, infra/webhooks/) both decide with ``task_answered``, so a round
# the receiver resumes is a round the run collects.
#
# A label outside the class list is not an answer: it never reaches training, the task keeps
# waiting, and the annotation stays in Label Studio, untouched, until someone changes it to a
# class of the list (or skips); the run's log, a timeout's error and the receiver's log name it.
#
# An annotation without a class (submitted, not skipped, no choice: from the API, a project made
# before choices were required, or a client that does not check) is not an answer either. Label
# Studio counts it and takes the task out of its queue, so nobody would ever be served it again:
# whoever finds it on a task that is not answered (the run's poll, the receiver's check) asks
# again (``ask_again``): the empty annotation is deleted, the task is back in the queue, the
# other annotations stay, and the log and the round's notice (the project's description) say
# which task and who.

SKIP, LABEL, REJECTED, EMPTY = "skip", "label", "rejected", "empty"


def _choice(annotation: dict) -> Optional[str]:
    for item in annotation.get("result") or []:
        choices = (item.get("value") or {}).get("choices") or []
        if choices:
            return str(choices[0])
    return None


def answer_kind(annotation: dict, classes) -> str:
    """What one annotation counts as: ``skip`` (cancelled), ``label`` (a class of the list),
    ``rejected`` (a label outside the list: not an answer), or ``empty`` (submitted without a
    class: not an answer)."""
    if annotation.get("was_cancelled"):
        return SKIP
    label = _choice(annotation)
    if label is None:
        return EMPTY
    return LABEL if label in classes else REJECTED


def _field(task, name: str):
    """A task's field, from a plain dict or from the SDK's task object."""
    return task.get(name) if isinstance(task, dict) else getattr(task, name, None)


def task_answered(annotations: list[dict], classes, *, overlap: Optional[int] = None,
                  per_task: int = 1) -> bool:
    """THE definition of "answered": as many people as are asked each labelled the task with
    a class of the list or skipped it. Asked: ``per_task`` (``annotators_per_task``), or more
    where Label Studio asks more of the task (its ``overlap``, raised when a tie asks one more
    annotator). A label outside the class list is not an answer, nor an annotation without a
    class (``EMPTY``)."""
    answers = sum(1 for a in annotations if answer_kind(a, classes) in (SKIP, LABEL))
    return answers >= max(per_task, overlap or 1)


def round_answered(tasks, classes, *, per_task: int = 1) -> bool:
    """Every task of a round (dicts or SDK tasks: ``annotations``, ``overlap``) is answered."""
    tasks = list(tasks)
    return bool(tasks) and all(
        task_answered(_field(t, "annotations") or [], classes, overlap=_field(t, "overlap"),
                      per_task=per_task) for t in tasks)


def rejected_labels(tasks, classes) -> list[dict]:
    """The labels outside the class list, one per annotation: task, item, annotation, label."""
    return [{"task": _field(t, "id"), "item": (_field(t, "data") or {}).get("item"),
             "annotation": a.get("id"), "label": _choice(a)}
            for t in tasks for a in _field(t, "annotations") or []
            if answer_kind(a, classes) == REJECTED]


def empty_annotations(tasks, classes, *, per_task: int = 1) -> list[dict]:
    """The annotations without a class on tasks that are not answered (``task_answered``), one
    per annotation: task, item, round, annotation, and who submitted it (user id: the last to
    edit it, else its creator). On an answered task an empty annotation is left alone."""
    return [{"task": _field(t, "id"), "item": (_field(t, "data") or {}).get("item"),
             "round": (_field(t, "data") or {}).get("round"), "annotation": a.get("id"),
             "by": _author(a)}
            for t in tasks
            if not task_answered(_field(t, "annotations") or [], classes,
                                 overlap=_field(t, "overlap"), per_task=per_task)
            for a in _field(t, "annotations") or [] if answer_kind(a, classes) == EMPTY]


ASKED_AGAIN = "ASKED AGAIN:"   # where the round's notice (the project's description) says so


def without_a_class(empty: list[dict]) -> str:
    """What happened to ``empty`` (``empty_annotations``, ``who`` filled in by ``ask_again``):
    said the same way in the run's log, the receiver's log and the round's notice."""
    listed = "; ".join(f"task {e['task']} (item {e['item']}) by {e.get('who') or e['by']}"
                       for e in empty[:5])
    more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
    return (f"{len(empty)} annotation(s) were submitted without a label ({listed}{more}): "
            "deleted, and each task is back in the queue; please label it again (pick a "
            "label, then Submit)")


def ask_again(client, project: int, empty: list[dict]) -> list[dict]:
    """Put the tasks of ``empty`` (``empty_annotations``) back in the annotators' queue: each
    annotation without a class is deleted (Label Studio then counts the task as not labelled
    and serves it again; the task's other annotations stay), one warning per annotation names
    the task and who, and the round's notice on the project list says the same. Returns the
    annotations deleted here (one another checker deleted first is left out), with ``who``
    (the person's e-mail)."""
    from label_studio_sdk.core.api_error import ApiError

    if not empty:
        return []
    try:
        emails = {u.id: u.email for u in client.users.list()}
    except Exception:  # who is a courtesy: the ids still name them
        emails = {}
    asked = []
    for e in empty:
        try:
            client.annotations.delete(id=e["annotation"])
        except ApiError as err:
            if err.status_code == 404:   # gone already (the receiver and the run both looked)
                continue
            raise
        e = {**e, "who": emails.get(e["by"]) or (f"user {e['by']}" if e["by"] else "someone")}
        log.warning("round %s: task %s (item %s) was submitted without a label by %s "
                    "(annotation %s, deleted): the task is back in the annotators' queue",
                    e["round"], e["task"], e["item"], e["who"], e["annotation"])
        asked.append(e)
    if asked:
        notice = (client.projects.get(id=project).description or "").split(ASKED_AGAIN)[0]
        client.projects.update(id=project, description=(
            f"{notice.rstrip()}\n{ASKED_AGAIN} {without_a_class(asked)}.").lstrip())
    return asked


def outside_class_list(rejected: list[tuple[str, str]], classes) -> str:
    """What to fix, for ``rejected`` as ``(where, label)`` pairs: said the same way by the run
    and by the receiver."""
    listed = "; ".join(f"{where}: {label!r}" for where, label in rejected[:5])
    more = f" and {len(rejected) - 5} more" if len(rejected) > 5 else ""
    return (f"{len(rejected)} label(s) outside the class list ({listed}{more}) do not count "
            f"as answers: change each in Label Studio to one of {list(classes)} (or skip the "
            "task); the annotation is kept until then")


def project_classes(config: str) -> list[str]:
    """The class list of a project, as its labelling config (made by ``label_config``) offers it."""
    from xml.etree import ElementTree

    return [c.get("value") for c in ElementTree.fromstring(config).iter("Choice")
            if c.get("value") is not None]


def classes_digest(classes) -> str:
    """A short fingerprint of a class list (order does not matter), for the webhook URL."""
    return hashlib.sha256("\0".join(sorted(map(str, classes))).encode()).hexdigest()[:12]


PAGE_SIZE = 500   # tasks per page of a listing
# A poll reads the tasks of its round saved since the newest save it has seen, less SETTLE (a
# save stamped earlier may commit later); every FULL_READ_EVERY polls, on a round's first poll,
# after it deleted an annotation, and before it calls a round answered, it reads them all.
SETTLE = timedelta(seconds=5)
FULL_READ_EVERY = 30


# what a run's webhook sends (``LabelStudioOracle.watch``), and all the receiver accepts
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED",
                   "ANNOTATIONS_DELETED")
WEBHOOK_SECRET_HEADER = "X-Sage-Ada-Webhook-Secret"
# A suspended flow run's tag in Prefect: which round it waits on and how that round is judged
# (project, round, annotators per task, the class list's digest) and when the wait times out.
# Set by the flow (``wait_tag``), read by the receiver (``read_wait_tag``): Label Studio's users
# can see and make webhooks, so the receiver takes none of this from a webhook or a request.
WAIT_TAG = "sage-ada-wait:"


def wait_tag(project: int, round: int, per_task: int, classes, deadline: Optional[float]) -> str:
    until = "" if deadline is None else f"{deadline:.0f}"
    return f"{WAIT_TAG}{project}:{round}:{per_task}:{classes_digest(classes)}:{until}"


def read_wait_tag(tags) -> Optional[dict]:
    """The wait a flow run's tags name (``wait_tag``), or None."""
    for tag in tags or []:
        if tag.startswith(WAIT_TAG):
            try:
                project, round, per_task, classes, until = tag[len(WAIT_TAG):].split(":")
                return {"project": int(project), "round": int(round), "per_task": int(per_task),
                        "classes": classes, "deadline": float(until) if until else None}
            except ValueError:
                return None
    return None


def round_filter(round: int) -> dict:
    """Label Studio's data-manager filter for the tasks of one round (also each round's tab)."""
    return {"conjunction": "and", "items": [
        {"filter": "filter:tasks:data.round", "operator": "equal", "type": "Number",
         "value": round}]}


def round_tasks(client, project: int, round: Optional[int] = None, *,
                changed_since: Optional[datetime] = None):
    """The tasks of ``round`` (all rounds: ``None``) with their annotations, filtered by Label
    Studio and paged: a check reads its round, not the whole project (which, with 10 rounds of
    1,000, is ten times the work on every poll and every webhook). ``changed_since``: only the
    tasks saved after then (an annotation saved, changed or skipped saves its task). URIs are
    not resolved: no check reads the image."""
    filters = round_filter(round) if round is not None else {"conjunction": "and", "items": []}
    if changed_since is not None:
        filters["items"].append({"filter": "filter:tasks:updated_at", "operator": "greater",
                                 "type": "Datetime",  # the one form it parses
                                 "value": changed_since.astimezone(timezone.utc).strftime(
                                     "%Y-%m-%dT%H:%M:%S.%fZ")})
    query = json.dumps({"filters": filters}) if filters["items"] else None
    return client.tasks.list(project=project, fields="all", query=query, resolve_uri=False,
                             page_size=PAGE_SIZE)


def _saved_at(task) -> Optional[datetime]:
    """When Label Studio last saved ``task`` (its clock, aware)."""
    at = _field(task, "updated_at")
    if isinstance(at, str):
        at = datetime.fromisoformat(at.replace("Z", "+00:00"))
    return at


@dataclass
class RoundStatus:
    """A round as the webhook receiver sees it (``round_status``)."""
    answered: bool
    n_tasks: int
    n_answered: int
    rejected: list              # rejected_labels(): labels outside the class list
    classes: list               # the project's class list (from its labelling config)
    empty: list                 # empty_annotations(): submitted without a class, to ask again


def round_status(client, project: int, round: int, *,
                 per_task: Optional[int] = None) -> RoundStatus:
    """The tasks of ``round`` in ``project`` checked with ``task_answered``, against the class
    list of the project's labelling config (the run made it from its classes, and checks that
    it still has them before it waits: ``LabelStudioOracle.complete``). ``per_task``: the
    run's ``annotators_per_task`` (in the webhook URL), else the project's
    ``maximum_annotations``."""
    settings = client.projects.get(id=project)
    classes = project_classes(settings.label_config)
    per_task = per_task or getattr(settings, "maximum_annotations", None) or 1
    tasks = [t for t in round_tasks(client, project, round)
             if (t.data or {}).get("round") == round]   # the filter's own guard
    done = sum(1 for t in tasks if task_answered(t.annotations or [], classes,
                                                 overlap=t.overlap, per_task=per_task))
    return RoundStatus(answered=round_answered(tasks, classes, per_task=per_task),
                       n_tasks=len(tasks), n_answered=done,
                       rejected=rejected_labels(tasks, classes), classes=classes,
                       empty=empty_annotations(tasks, classes, per_task=per_task))


@dataclass
class Resolution:
    label: Optional[str]          # None: not (validly) labelled yet, or skipped
    skipped: bool = False
    annotator: Optional[int] = None   # who gave the label (the last to edit it), or skipped
    lead_time_s: Optional[float] = None
    n_annotations: int = 0
    answered: int = 0                 # labels in the class list, and skips
    annotators: tuple = ()            # everyone whose label is the one resolved
    agreement: Optional[float] = None  # share of the labels that equal the one resolved
    tied: tuple = ()                  # the labels a majority tie left unsettled (label: None)
    updated_at: Optional[str] = None  # when the resolving annotation was last saved
    rejected: tuple = ()              # (annotation id, label) of labels outside the class list
    done: bool = False                # answered as asked (task_answered); set by the oracle's poll


def _author(annotation: dict) -> Optional[int]:
    """Who stands behind an annotation: the last to edit it (a second annotator who changes
    the first's annotation replaces it), else its creator."""
    return annotation.get("updated_by") or annotation.get("completed_by")


def resolve(annotations: list[dict], classes: list[str], rule: str, sample_id: str,
            ties: str = "latest") -> Resolution:
    """Turn a task's annotations into one label (or a skip), rejecting labels outside the class
    list (``answer_kind``). Skipped: no label of the list, and someone skipped. A majority tie
    gives the latest of the tied labels under ``ties: latest``; otherwise no label yet, and the
    tied labels, for the oracle to ask another annotator or fail."""
    valid, cancelled, rejected = [], [], []
    for ann in sorted(annotations, key=lambda a: (a.get("updated_at") or a.get("created_at") or "",
                                                  a.get("id") or 0)):
        kind = answer_kind(ann, classes)
        if kind == SKIP:
            cancelled.append(ann)
        elif kind == LABEL:
            valid.append((_choice(ann), ann))
        elif kind == REJECTED:
            log.warning("rejected label %r for %s (annotation %s): not one of %s; it does not "
                        "count as an answer until it is changed in Label Studio", _choice(ann),
                        sample_id, ann.get("id"), classes)
            rejected.append((ann.get("id"), _choice(ann)))
    answered, rejected = len(valid) + len(cancelled), tuple(rejected)
    if not valid:
        if cancelled:  # skipped: who, and after how long
            return Resolution(None, skipped=True, annotator=_author(cancelled[-1]),
                              lead_time_s=cancelled[-1].get("lead_time"),
                              n_annotations=len(annotations), answered=answered,
                              rejected=rejected)
        return Resolution(None, n_annotations=len(annotations), answered=answered,
                          rejected=rejected)
    counts = Counter(label for label, _ in valid)
    if rule == "majority":
        best = max(counts.values())
        leaders = [(l, a) for l, a in valid if counts[l] == best]
        tied = tuple(sorted({l for l, _ in leaders}))
        if len(tied) > 1 and ties != "latest":
            return Resolution(None, n_annotations=len(annotations), answered=answered, tied=tied,
                              agreement=best / len(valid), rejected=rejected)
        label, ann = leaders[-1]
    else:
        label, ann = valid[-1]
    return Resolution(label, annotator=_author(ann), lead_time_s=ann.get("lead_time"),
                      updated_at=str(ann.get("updated_at") or ann.get("created_at") or "") or None,
                      n_annotations=len(annotations), answered=answered,
                      annotators=tuple(_author(a) for l, a in valid if l == label),
                      agreement=counts[label] / len(valid), rejected=rejected)


class LabelStudioOracle:
    def __init__(self, *, url: str, api_key: str, classes: list[str], data_root: str | Path,
                 experiment: str, poll_interval_s: float = 10.0, on_timeout: str = "fail",
                 resolve_rule: str = "majority", progress: bool = True, client=None,
                 hotkeys: dict[str, str] | None = None, instructions: str = "",
                 pixelated: bool = False, show_guess: bool = True, annotators_per_task: int = 1,
                 ties: str = "ask_another", images: str = "reference",
                 media_root: str | Path = ".sage-ada/label-studio/media",
                 s3: Optional[dict] = None):
        self.url, self.classes = url.rstrip("/"), classes
        # a hotkey clash fails here, first
        self.label_config = label_config(classes, hotkeys, pixelated=pixelated)
        self.instructions, self.show_guess = instructions, show_guess
        self.expert_instruction = annotator_instructions(instructions, show_guess=show_guess)
        self.annotators_per_task, self.ties = annotators_per_task, ties
        self.data_root = Path(data_root).resolve()
        self.images, self.media_root = images, media_root
        self.s3 = dict(s3) if s3 else None   # images: s3: endpoint, bucket, credentials
        if images == "s3" and not self.s3:
            raise OracleError("label_studio.images: s3 needs label_studio.s3 (endpoint, bucket, "
                              "credentials)")
        self._s3_media: Optional[S3Media] = None
        self.experiment, self.poll_interval_s = experiment, poll_interval_s
        self.on_timeout, self.resolve_rule, self.progress = on_timeout, resolve_rule, progress
        self.client = client or connect(url, api_key)
        self.run_id: Optional[str] = None
        self.details: dict[str, dict] = {}
        self.on_poll = None  # e.g. an AutoAnnotator, called before each poll
        self._seen: dict[tuple, dict] = {}  # (project, round) → what polls read (``_read_round``)

    # ------------------------------------------------------------------ project
    def bind(self, run_id: str) -> None:
        self.run_id = run_id

    def item(self, sample_id: str) -> str:
        return item_id(self.run_id or "run", sample_id)

    @property
    def media(self) -> MediaFolder | S3Media:
        run = self.run_id or "run"
        if self.images != "s3":
            return MediaFolder(self.media_root, run)
        if self._s3_media is None or self._s3_media.run != run:  # one client, checked once
            self._s3_media = S3Media(**self.s3, run=run)
        return self._s3_media

    @property
    def title(self) -> str:
        run = self.run_id or "run"
        return f"{self.experiment[:max(1, 47 - len(run))]} · {run}"  # Label Studio allows 50

    def find_project(self) -> Optional[int]:
        """This run's project, if it has one (nothing is created)."""
        for project in self.client.projects.list(title=self.title):
            if project.title == self.title:
                return project.id
        return None

    def project_id(self) -> int:
        """Get or create this run's project."""
        found = self.find_project()
        if found is not None:
            return found
        if self.images != "inline":
            self.media.ensure()   # a folder that cannot be made fails before the project is
        project = self.client.projects.create(
            title=self.title, label_config=self.label_config,
            description=f"sage-ada active domain adaptation, MLflow run {self.run_id}",
            # behind the "Instructions" buttons, not a modal over each task (issue 30)
            expert_instruction=self.expert_instruction, show_instruction=False,
            show_skip_button=True, maximum_annotations=self.annotators_per_task,
            overlap_cohort_percentage=100,
            # a skip answers the task (``task_answered``), so Label Studio must not serve it to
            # someone else (its default, REQUEUE_FOR_OTHERS): a label given there after the
            # round was collected never reached the run (issue 31, five annotators at once)
            skip_queue="IGNORE_SKIPPED")
        if self.images != "inline":
            try:
                self.serve_media(project.id)
            except BaseException:   # a project whose images nobody can see: a retry starts clean
                with contextlib.suppress(Exception):
                    self.client.projects.delete(id=project.id)
                raise
        return project.id

    def serve_media(self, project: int) -> None:
        """Let the project's users see the run's copies: a local-files storage of the run's
        folder, never synced (the run imports its tasks itself). Label Studio checks that the
        folder exists and lies under the folder it serves; where it does not, one error says how
        to start it so that it does."""
        from label_studio_sdk.core.api_error import ApiError

        if self.images == "s3":
            return self._serve_s3(project)
        folder = self.media.ensure()
        try:
            self.client.import_storage.local.create(
                project=project, path=str(folder), title="sage-ada: the run's images",
                description="copies under opaque names; not synced", use_blob_urls=True)
        except ApiError as err:
            said = err.body if isinstance(err.body, (str, dict)) else err
            raise OracleError(
                f"Label Studio at {self.url} does not serve the folder of this run's images "
                f"({folder}: {said}); restart it with the run's settings "
                "(`infra/label-studio/server.sh stop`, then `start`: it serves "
                "label_studio.media_root), or set label_studio.images: inline") from None

    def _serve_s3(self, project: int) -> None:
        """``serve_media`` for ``images: s3``: an S3 source storage of the run's prefix, never
        synced, with the store's read-only keys (Label Studio keeps them in its database and
        never shows the secret through its API); ``presign`` off, so Label Studio reads each
        image itself and sends it on to people logged in to the project, whose browsers need no
        route to the store. Label Studio checks that the prefix holds an object, so the run's
        prefix gets a note first. Where Label Studio cannot read the store, one error says why."""
        from label_studio_sdk.core.api_error import ApiError

        media = self.media
        media.upload("README.txt", (f"The images that annotators of sage-ada run {media.run} "
                                    "see, one per task, named by its opaque item.\n").encode(),
                     "text/plain")
        try:
            self.client.import_storage.s3.create(
                project=project, title="sage-ada: the run's images",
                description="objects under opaque keys; not synced", **media.storage())
        except ApiError as err:
            said = err.body if isinstance(err.body, (str, dict)) else err
            raise OracleError(
                f"Label Studio at {self.url} cannot read this run's images from the S3 store at "
                f"{media.endpoint}, bucket {media.bucket!r} ({said}); it must reach "
                "label_studio.s3.endpoint at that address with the keys of "
                "label_studio.s3.credentials (a private address only if it trusts it: start it "
                "with that endpoint in params.yaml, or in LABEL_STUDIO_TRUSTED_URLS), or set "
                "label_studio.images: reference") from None

    def round_view(self, project: int, round: int) -> int:
        """A data-manager tab per round ("Round 2"), so annotators and reviewers see one round's
        tasks and its progress; made once, its id is returned."""
        title = f"Round {round}"
        for view in self.client.views.list(project=project):
            if (view.data or {}).get("title") == title:
                return view.id
        view = self.client.views.create(project=project, data={
            "title": title, "filters": round_filter(round)})
        return view.id

    def project_url(self, project_id: int) -> str:
        return f"{self.url}/projects/{project_id}/data"

    def tasks(self, project_id: int, round: Optional[int] = None) -> dict[str, object]:
        """The tasks of ``round`` (every round: ``None``) by item (tasks of older runs, by their
        sample_id's item), as ``round_tasks`` reads them."""
        return {t.data.get("item") or self.item(t.data.get("sample_id")): t
                for t in round_tasks(self.client, project_id, round)}

    def shown(self, sample_id: str, path: str) -> str:
        """What a task holds for its image: a URL of the run's copy (``reference``: a file
        Label Studio serves; ``s3``: an ``s3://`` object Label Studio reads) or the bytes
        (``inline``); none names the file."""
        if self.images == "inline":
            return image_data_uri(self.data_root / path)
        return self.media.put(self.item(sample_id), self.data_root / path)

    # ------------------------------------------------------------------ oracle interface
    def request(self, sample_ids: list[str], round: int, context: Optional[dict] = None) -> dict:
        context = context or {}
        project = self.project_id()
        existing = self.tasks(project, round)   # a retried or resumed round: no duplicates
        new = [s for s in sample_ids if self.item(s) not in existing]
        if new:
            payload = []
            for sid in new:
                info = context.get(sid, {})
                if not info.get("path"):
                    raise OracleError(f"no image path for {sid}: the request context must name it")
                task = {"data": {"image": self.shown(sid, info["path"]),
                                 "item": self.item(sid), "round": round,
                                 "score": info.get("score")}}
                if info.get("prediction") is not None and self.show_guess:
                    task["predictions"] = [{"model_version": f"round {round - 1}",
                                            "score": info.get("confidence"),
                                            "result": choice_result(info["prediction"])}]
                payload.append(task)
            self.client.projects.import_tasks(id=project, request=payload, return_task_ids=True)
        update = {"description": (  # the notice annotators see on the project list
            f"Round {round} is ready: {len(sample_ids)} image{'s' * (len(sample_ids) != 1)} to "
            f"label (tab 'Round {round}'). sage-ada active domain adaptation, MLflow run "
            f"{self.run_id}")}
        if self.show_guess and any(c.get("prediction") is not None for c in context.values()):
            # Label Studio pre-fills only the predictions of the project's model version.
            update["model_version"] = f"round {round - 1}"
        self.client.projects.update(id=project, **update)
        url = f"{self.project_url(project)}?tab={self.round_view(project, round)}"
        log.info("round %d: %d tasks in Label Studio (%d new) at %s", round, len(sample_ids),
                 len(new), url)
        return {"project_id": project, "round": round, "sample_ids": list(sample_ids), "url": url}

    def _resolve(self, project: int, sample_ids: list[str],
                 round: Optional[int] = None) -> dict[str, tuple]:
        """``sample_id → (task, Resolution)`` for the samples that have a task now (in
        ``round``, where given)."""
        return self._found(sample_ids, self.tasks(project, round))

    def _found(self, sample_ids: list[str], tasks: dict[str, object]) -> dict[str, tuple]:
        """``sample_id → (task, Resolution)`` for the samples found in ``tasks`` (by item)."""
        return {sid: (task, resolve(task.annotations or [], self.classes, self.resolve_rule, sid,
                                    self.ties))
                for sid in sample_ids if (task := tasks.get(self.item(sid))) is not None}

    def _read_round(self, project: int, round: int, *, full: bool) -> dict[str, object]:
        """The round's tasks by item, as polls see them: all of them (``full``, a round's first
        read, every ``FULL_READ_EVERY`` polls), else the ones saved since the last read merged
        into what earlier reads found. At 1,000 tasks a round a full read takes seconds; while
        people label, a poll reads the few tasks they saved since (issue 31)."""
        key = (project, round)
        seen = self._seen.get(key)
        if full or seen is None or seen["reads"] >= FULL_READ_EVERY:
            tasks = self.tasks(project, round)
            seen = self._seen[key] = {"tasks": tasks, "reads": 0, "full": True}
            changed = tasks.values()
        else:
            since = seen["newest"] - SETTLE if seen["newest"] else None
            changed = list(round_tasks(self.client, project, round, changed_since=since))
            seen["tasks"].update({t.data.get("item") or self.item(t.data.get("sample_id")): t
                                  for t in changed})
            seen["reads"] += 1
            seen["full"] = False
        stamps = [at for t in changed if (at := _saved_at(t)) is not None]
        seen["newest"] = max(stamps + ([seen["newest"]] if seen.get("newest") else []),
                             default=None)
        return seen["tasks"]

    def poll(self, handle: dict) -> dict[str, Resolution]:
        """The round's tasks resolved, each ``done`` by ``task_answered``, from the tasks saved
        since the last poll (``_read_round``); a round that looks answered is read again whole
        before it is called answered. An annotation without a class on a task that is not
        answered is asked again first (``ask_again``: deleted, the task back in the queue, the
        log and the round's notice name task and who), rather than waited on in silence."""
        if self.on_poll is not None:
            self.on_poll(handle)
        return self._poll(handle, full=False)

    def _poll(self, handle: dict, *, full: bool) -> dict[str, Resolution]:
        project, ids = handle["project_id"], handle["sample_ids"]
        found = self._found(ids, self._read_round(project, handle["round"], full=full))
        empty = empty_annotations([task for task, _ in found.values()], self.classes,
                                  per_task=self.annotators_per_task)
        if empty:   # deleted (or already gone): a deletion may not save the task, so read all
            ask_again(self.client, project, empty)
            found = self._found(ids, self._read_round(project, handle["round"], full=True))
        missing = [s for s in handle["sample_ids"] if s not in found]
        if missing:
            raise OracleError(f"tasks for {missing[:5]} vanished from project "
                              f"{handle['project_id']}; were they deleted in Label Studio?")
        overlap = {sid: task.overlap for sid, (task, _) in found.items()}
        overlap.update(self._settle_ties(handle, found))
        for sid, (task, r) in found.items():
            r.done = self._answered(task, overlap[sid])
        if not self._seen[(project, handle["round"])]["full"] and all(
                r.done for _, r in found.values()):
            return self._poll(handle, full=True)   # answered: said only from a whole read
        return {sid: found[sid][1] for sid in handle["sample_ids"]}

    def _answered(self, task, overlap: Optional[int]) -> bool:
        """``task_answered``, with this run's classes and ``annotators_per_task``."""
        return task_answered(task.annotations or [], self.classes, overlap=overlap,
                             per_task=self.annotators_per_task)

    def _settle_ties(self, handle: dict, found: dict[str, tuple]) -> dict[str, int]:
        """A tie among as many labels as were asked for: under ``ask_another`` the task wants
        one more annotator (Label Studio serves it to someone who has not labelled it yet), so
        it is not answered until then (its new overlap is returned); under ``fail``, one error
        naming the tied samples."""
        tied = {sid: (task, r) for sid, (task, r) in found.items()
                if r.tied and self._answered(task, task.overlap)}
        if tied and self.ties == "fail":
            listed = "; ".join(f"{sid}: {' vs '.join(r.tied)}" for sid, (_, r) in
                               list(tied.items())[:5])
            raise OracleError(
                f"round {handle['round']}: annotators tie on {len(tied)} image(s) ({listed}); "
                f"break each tie in Label Studio ({handle['url']}: one more annotation, or an "
                "edit), then `sage-ada run --resume <run id>`; or set label_studio.ties: "
                "ask_another or latest")
        for sid, (task, r) in tied.items():
            log.info("round %d: %s is tied (%s); asking one more annotator", handle["round"],
                     self.item(sid), " vs ".join(r.tied))
            self.client.tasks.update(id=str(task.id), overlap=r.answered + 1, is_labeled=False)
        return {sid: r.answered + 1 for sid, (_, r) in tied.items()}

    def close(self, handle: dict) -> int:
        """Take the round's skipped and unanswered tasks out of the queue (deleted: Label Studio
        has no archive), so nobody labels them after the round closed; who skipped and after how
        long is already in the round's MLflow record. The samples are back in the pool, and a
        later selection gets a fresh task. Idempotent; returns how many tasks left."""
        closed = 0
        self._seen.pop((handle["project_id"], handle["round"]), None)   # the polls' copy
        for task, r in self._resolve(handle["project_id"], handle["sample_ids"],
                                     handle["round"]).values():
            if r.label is None:
                self.client.tasks.delete(id=task.id)
                closed += 1
        if closed:
            log.info("round %d closed: %d skipped or unanswered tasks left the queue",
                     handle["round"], closed)
        # the notice on the project list: this round asks nothing any more (nor asks again)
        self.client.projects.update(id=handle["project_id"], description=(
            f"Round {handle['round']} is done: nothing to label until the next round is ready. "
            f"sage-ada active domain adaptation, MLflow run {self.run_id}"))
        return closed

    def relabelled(self, labelled: dict[str, str]) -> dict[str, dict]:
        """The samples of ``labelled`` whose annotations give another label now (corrected in
        Label Studio after their round was collected): ``{"old", "new", "by", "at"}`` each, by
        who made the label (the last to edit it) and when. Skipped, emptied or tied tasks are
        left out, so their earlier label stands."""
        if not labelled:
            return {}
        found = self._resolve(self.project_id(), sorted(labelled))
        return {sid: {"old": labelled[sid], "new": r.label, "by": r.annotator, "at": r.updated_at}
                for sid, (_, r) in found.items()
                if r.label is not None and r.label != labelled[sid]}

    def _poll_through_outages(self, handle: dict, deadline: float) -> dict[str, Resolution]:
        """``poll``, waiting out a server that stops answering (a restart takes 20-60 s), with
        one log line per try and a growing pause, until the round's timeout; then one error
        that says how to continue. Under ``on_timeout: wait`` it waits as long as it takes."""
        import httpx

        pause = self.poll_interval_s
        while True:
            try:
                return self.poll(handle)
            except httpx.TransportError as err:
                if time.monotonic() >= deadline and self.on_timeout != "wait":
                    raise OracleError(
                        f"Label Studio at {self.url} stopped answering while round "
                        f"{handle['round']} was being annotated ({err.__class__.__name__}); no "
                        "annotation is lost: start it again (`infra/label-studio/server.sh "
                        "start`), then continue with `sage-ada run --resume <run id>`") from None
                log.warning("Label Studio at %s is not answering (%s); trying again in %.0f s",
                            self.url, err.__class__.__name__, pause)
                time.sleep(pause)
                pause = min(2 * pause, 30.0)

    def complete(self, handle: dict) -> bool:
        """Whether every task of the round is answered (``task_answered``; one poll): what the
        run checks before and after it suspends. The receiver checks the same round with the
        class list of the project's labelling config, so that list must still be this run's:
        where someone changed it in Label Studio, one error says so, rather than a run that
        the receiver resumes and that suspends again."""
        settings = self.client.projects.get(id=handle["project_id"])
        theirs = project_classes(settings.label_config)
        if set(theirs) != set(self.classes):
            added, gone = sorted(set(theirs) - set(self.classes)), sorted(
                set(self.classes) - set(theirs))
            raise OracleError(
                f"the labelling config of Label Studio project {handle['project_id']} was "
                f"changed: its choices are not this run's classes (added: {added}, missing: "
                f"{gone}); labels are checked against the run's classes {self.classes}, so put "
                f"the config back (project settings, Labeling Interface), then `sage-ada run "
                "--resume <run id>`")
        return all(r.done for r in self.poll(handle).values())

    def watch(self, handle: dict, receiver: str, flow_run_id: str) -> None:
        """Have Label Studio tell ``receiver`` of each annotation in this round's project (one
        webhook per project; an earlier round's is replaced), with the team's webhook secret
        in a header (``components.secrets``), which the receiver requires. The URL names the
        flow run to resume and the round (``annotators_per_task`` and the class list's
        fingerprint too, for people reading it); the receiver acts only on what the flow run's
        tag in Prefect says it waits on (``wait_tag``), since Label Studio's users can see and
        make webhooks."""
        from urllib.parse import urlencode

        from components.secrets import WEBHOOK_SECRET, read_secret, secrets_dir

        secret = read_secret(WEBHOOK_SECRET)
        if not secret:
            raise OracleError(
                "no webhook secret for label_studio.wait: suspend: start the receiver "
                "(`infra/webhooks/server.sh start` makes it, in "
                f"{secrets_dir() / WEBHOOK_SECRET[0]}), or set {WEBHOOK_SECRET[1]} as the "
                "receiver has it")
        project = handle["project_id"]
        self.unwatch(handle, receiver)
        query = {"flow_run": flow_run_id, "project": project, "round": handle["round"],
                 "per_task": self.annotators_per_task, "classes": classes_digest(self.classes)}
        self.client.webhooks.create(
            url=f"{receiver.rstrip('/')}/label-studio?{urlencode(query)}", project=project,
            send_payload=False, send_for_all_actions=False, is_active=True,
            headers={WEBHOOK_SECRET_HEADER: secret}, actions=list(WEBHOOK_ACTIONS))

    def wait_tag(self, handle: dict, deadline: Optional[float]) -> str:
        """What the flow run tells Prefect it waits on (``wait_tag``), for the receiver."""
        return wait_tag(handle["project_id"], handle["round"], self.annotators_per_task,
                        self.classes, deadline)

    def unwatch(self, handle: dict, receiver: str) -> None:
        """Remove this project's webhooks to ``receiver`` (the round is collected)."""
        base = receiver.rstrip("/") + "/"
        for hook in self.client.webhooks.list(project=str(handle["project_id"])):
            if hook.url.startswith(base) and getattr(hook, "project", None) == handle["project_id"]:
                self.client.webhooks.delete(id=hook.id)

    def collect(self, handle: dict, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        total = len(handle["sample_ids"])
        bar = tqdm(total=total, desc=f"annotated (round {handle['round']})",
                   disable=not self.progress, leave=False)
        try:
            while True:
                state = self._poll_through_outages(handle, deadline)
                done = sum(1 for r in state.values() if r.done)
                bar.n = done
                bar.refresh()
                if done == total:
                    break
                if time.monotonic() >= deadline:
                    if self.on_timeout == "partial":   # what the round ends with: read whole
                        state = self._poll(handle, full=True)
                        break
                    if self.on_timeout == "fail":
                        rejected = [(sid, label) for sid, r in state.items() if not r.done
                                    for _, label in r.rejected]
                        raise OracleTimeout(
                            f"{done} of {total} tasks of round {handle['round']} annotated after "
                            f"{timeout:.0f}s; the tasks stay at {handle['url']}; "
                            + (outside_class_list(rejected, self.classes) + "; "
                               if rejected else "")
                            + "resume the run (`sage-ada run --resume <run id>`) to keep "
                            "waiting, or set label_studio.on_timeout: partial")
                    deadline = time.monotonic() + timeout  # "wait": keep polling
                    log.info("still waiting: %d of %d annotated", done, total)
                time.sleep(self.poll_interval_s)
        finally:
            bar.close()
        self.details = {sid: {"annotator": r.annotator, "lead_time_s": r.lead_time_s,
                              "n_annotations": r.n_annotations, "skipped": r.skipped,
                              "annotators": list(r.annotators), "agreement": r.agreement,
                              "tied": list(r.tied)}
                        for sid, r in state.items()}
        return {sid: r.label for sid, r in state.items() if r.label is not None}

    def describe(self, handle: dict) -> dict[str, dict]:
        """Annotator and lead time per sample of the last collect (for MLflow lineage)."""
        return self.details
