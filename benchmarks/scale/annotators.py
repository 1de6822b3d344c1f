"""Part 4 of ``benchmarks/team_scale.py`` (issue 31): five people labelling one round at once.

Five scripted annotators, each with an account made as users make one
(``infra/label-studio/add-annotator.sh``) and logged in as a browser logs in (session and CSRF
token), work one round of ``--tasks`` tasks through Label Studio's labelling stream, all at the
same time, while a ``LabelStudioOracle.collect`` waits for the round in another thread, as a run
does. Each asks for its next task (``GET /api/projects/{id}/next/?view=<the round's tab>``:
Label Studio hands tasks out under its task locks, so people should not collide), posts the
label, now and then gives a wrong one that it corrects later (``PATCH /api/annotations/{id}/``)
or skips, and keeps a ledger of everything it did. A sixth person labels in a real browser
(headless Chromium, by keyboard, "Label All Tasks": the data manager's stream under the same
locks) at the same time. People stay while the round is open (a skipped or tied task comes back)
and stop once the run has collected it: one who leaves a task open keeps it locked for a day
(Label Studio's lock TTL), so the round would never finish.

Then the reconciliation, against what Label Studio holds once everyone has stopped and against
what the run has (the labels ``collect`` returned, and the corrections ``relabelled`` reads
before the next adaptation, as a run does): every ledger entry is in Label Studio as its
annotator last left it; every task's label is the last thing its annotator said, credited
(``describe``, ``relabelled``'s ``by``) to that person; a task only skipped has no label; no task
holds more labels than asked (``annotators_per_task``: 1); no annotation is counted twice. The
browser person keeps no ids: their annotations are found by their user and matched, in order,
to the keys they pressed.

``run`` does this on SQLite (server.sh's default) and on PostgreSQL (a team's, where installed),
then two defects found on the way, step by step: a label on a skipped task that Label Studio
served again, given after the run's last poll, never reaches the run
(``skipped_then_served_again``); people who follow the round's link with a browser's default
settings are served the same task (``round_link_collides``).

Figures: annotations lost, duplicated and misattributed (target 0 each), the round's wall time,
annotations per second, what the people did (labels, skips, corrections, server errors retried).
``run(args, work)`` is the driver's part ``annotators``; ``concurrent_round`` is what
``tests/test_concurrent_annotators.py`` runs at 100 tasks.
"""
from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from components.oracle.label_studio import _choice  # what a person's annotation says

REPO = Path(__file__).resolve().parents[2]

NO_MORE_TASKS = "No More Tasks Left in Queue"


# ------------------------------------------------------------------ the server and the people
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_installed() -> bool:
    return bool(list(Path("/usr/lib/postgresql").glob("*/bin/initdb")))


def _script(path: str, *args: str, env: dict, timeout: float = 400) -> str:
    out = subprocess.run(["bash", str(REPO / "infra" / path), *args], env=env, text=True,
                         capture_output=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"infra/{path} {' '.join(args)} failed:\n{out.stdout[-2000:]}\n"
                           f"{out.stderr[-2000:]}")
    return out.stdout.strip()


@contextmanager
def label_studio_server(folder: Path, database: str = "sqlite"):
    """Label Studio installed and started by the project's own scripts, with its data in
    ``folder``, its port set once in a params file's ``label_studio.url`` (as users do) and its
    images under ``folder/media``; ``database``: ``sqlite`` (the default of server.sh: one
    machine) or ``postgresql`` (a team's: ``infra/postgres/server.sh``, started here on a free
    port, and ``LABEL_STUDIO_DATABASE_URL``). Everything is stopped on the way out. Yields
    url, credentials, env, token, media, database."""
    import shutil
    import tempfile

    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    env.pop("LABEL_STUDIO_PORT", None)
    env.pop("LABEL_STUDIO_DATABASE_URL", None)
    _script("label-studio/install.sh", env=env, timeout=900)
    port, media = free_port(), folder / "media"
    params = folder / "params.yaml"
    params.write_text(yaml.safe_dump({"label_studio": {"url": f"http://127.0.0.1:{port}",
                                                       "media_root": str(media)}}))
    env.update(LABEL_STUDIO_DATA=str(folder), SAGE_ADA_PARAMS=str(params))
    stops, pg = [], None
    try:
        if database == "postgresql":
            pg = Path(tempfile.mkdtemp(prefix="sage-ada-pg-"))   # the postgres user must reach it
            os.chmod(pg, 0o755)
            pg_env = {**env, "POSTGRES_PORT": str(free_port()), "POSTGRES_DATA": str(pg / "data")}
            _script("postgres/server.sh", "start", env=pg_env)
            stops.append(("postgres/server.sh", pg_env))
            env["LABEL_STUDIO_DATABASE_URL"] = _script("postgres/server.sh", "url", "labelstudio",
                                                       env=pg_env)
        elif database != "sqlite":
            raise ValueError(f"database: sqlite or postgresql, not {database!r}")
        _script("label-studio/server.sh", "start", env=env)
        stops.append(("label-studio/server.sh", env))
        creds = folder / "credentials.env"
        token = [l.split("=", 1)[1] for l in creds.read_text().splitlines() if "TOKEN" in l][0]
        yield {"url": f"http://127.0.0.1:{port}", "credentials": str(creds), "env": env,
               "token": token, "media": str(media), "database": database}
    finally:
        for path, e in reversed(stops):
            subprocess.run(["bash", str(REPO / "infra" / path), "stop"], env=e, timeout=120,
                           capture_output=True)
        if pg is not None:
            shutil.rmtree(pg, ignore_errors=True)


def add_annotators(server: dict, emails: list[str]) -> dict[str, str]:
    """Accounts made as users make them (``infra/label-studio/add-annotator.sh``, one call for
    all): e-mail → password, read from the file the script writes."""
    subprocess.run(["bash", str(REPO / "infra/label-studio/add-annotator.sh"), *emails],
                   env=server["env"], check=True, capture_output=True, timeout=300)
    folder = Path(server["env"]["LABEL_STUDIO_DATA"]) / "annotators"
    return {e: dict(l.split("=", 1) for l in (folder / f"{e}.env").read_text().splitlines())
            ["LABEL_STUDIO_PASSWORD"] for e in emails}


class Session:
    """A person's browser session on Label Studio, through its API: logged in with the login
    form (CSRF token included, as ``tests/test_label_studio.py`` does), every write carrying
    the CSRF header. Server errors (SQLite's "database is locked" under concurrent writes) and
    dropped connections are retried, counted in ``errors``."""

    def __init__(self, url: str, email: str, password: str):
        import httpx

        self.url, self.email = url, email
        self.errors: list[str] = []
        self.http = httpx.Client(base_url=url, timeout=120)
        self.http.get("/user/login/")
        answer = self.http.post("/user/login/", data={
            "email": email, "password": password,
            "csrfmiddlewaretoken": self.http.cookies["csrftoken"]},
            headers={"Referer": url + "/user/login/"})
        if answer.status_code != 302 or "/user/login" in answer.headers.get("location", ""):
            raise RuntimeError(f"{email} could not log in to {url} (HTTP {answer.status_code})")
        self.user_id = self.call("GET", "/api/current-user/whoami").json()["id"]

    def call(self, method: str, path: str, *, retry: bool = True, ok=(200, 201, 204, 404),
             **kwargs):
        """One request; 5xx and transport errors are retried (``retry``) with a growing pause,
        up to six tries. Returns the response (whose status is one of ``ok``)."""
        import httpx

        if method != "GET":
            kwargs["headers"] = {"X-CSRFToken": self.http.cookies["csrftoken"],
                                 "Referer": self.url + "/", **kwargs.get("headers", {})}
        for attempt in range(6):
            try:
                answer = self.http.request(method, path, **kwargs)
                if answer.status_code in ok:
                    return answer
                why = f"HTTP {answer.status_code} {answer.text[:200]!r}"
                if answer.status_code < 500:
                    raise RuntimeError(f"{self.email}: {method} {path}: {why}")
            except httpx.TransportError as err:
                why = err.__class__.__name__
            self.errors.append(f"{method} {path}: {why}")
            if not retry or attempt == 5:
                raise RuntimeError(f"{self.email}: {method} {path}: {why} (after {attempt + 1} "
                                   "tries)")
            time.sleep(0.3 * 2 ** attempt)


# ------------------------------------------------------------------ a scripted annotator
@dataclass
class Entry:
    """One thing an annotator did, as Label Studio acknowledged it."""
    task: int
    annotation: int
    label: Optional[str]          # None: a skip
    skip: bool = False
    correction: bool = False      # a PATCH of one of their own earlier annotations
    at: float = 0.0               # wall-clock time of Label Studio's answer
    adopted: bool = False         # saved although Label Studio answered with an error


class ScriptedAnnotator:
    """A person working the round's labelling stream through Label Studio's API, as its own
    stream does: next task (under Label Studio's lock), label it (``mistake_rate``: a wrong
    label, which ``correct_rate`` of the time is corrected later, before asking for another
    task), or skip it (``skip_rate``). While the round is open (``collected`` not set) and the
    stream has nothing for them, they wait and ask again (a skipped or tied task comes back);
    once it is collected, they finish the task in hand and their corrections, and stop. Keeps a
    ``ledger`` of what it did."""

    def __init__(self, session: Session, project: int, view: Optional[int],
                 truth: dict[str, str], classes: list[str], collected: threading.Event, *,
                 seed: int = 0,
                 skip_rate: float = 0.05, mistake_rate: float = 0.08,
                 correct_rate: float = 0.7, think_s: float = 0.05):
        self.s, self.project, self.view = session, project, view
        self.collected = collected
        self.truth, self.classes = truth, classes
        self.rng = random.Random(seed)
        self.skip_rate, self.mistake_rate, self.correct_rate = skip_rate, mistake_rate, correct_rate
        self.think_s = think_s
        self.ledger: list[Entry] = []
        self.to_correct: list[tuple[Entry, str]] = []   # a wrong label, and the right one
        self.error: Optional[str] = None

    @property
    def email(self) -> str:
        return self.s.email

    def next_task(self) -> Optional[dict]:
        params = {"view": self.view} if self.view else {}
        answer = self.s.call("GET", f"/api/projects/{self.project}/next/", params=params)
        return None if answer.status_code == 404 else answer.json()

    def mine_on(self, task: int) -> list[dict]:
        answer = self.s.call("GET", f"/api/tasks/{task}/annotations/")
        return [a for a in answer.json() if a.get("completed_by") == self.s.user_id]

    def post(self, task: int, label: Optional[str], lead: float) -> Entry:
        """Save an annotation; where Label Studio answers with an error, look first whether it
        was saved anyway before trying again (a second try would make a second annotation)."""
        from components.oracle.label_studio import choice_result

        body = {"result": [] if label is None else choice_result(label),
                "was_cancelled": label is None, "ground_truth": False, "lead_time": lead,
                "project": self.project}
        path = f"/api/tasks/{task}/annotations/" + ("?was_cancelled=1" if label is None else "")
        known = {e.annotation for e in self.ledger}
        for attempt in range(6):
            try:
                answer = self.s.call("POST", path, json=body, retry=False, ok=(201,))
                return Entry(task, answer.json()["id"], label, skip=label is None, at=time.time())
            except RuntimeError as err:
                if "HTTP 4" in str(err):
                    raise
                time.sleep(0.3 * 2 ** attempt)
                saved = [a for a in self.mine_on(task) if a["id"] not in known]
                if saved:
                    return Entry(task, saved[0]["id"], label, skip=label is None, at=time.time(),
                                 adopted=True)
        raise RuntimeError(f"{self.email}: could not save an annotation on task {task}")

    def correct(self, entry: Entry, label: str) -> None:
        from components.oracle.label_studio import choice_result

        self.s.call("PATCH", f"/api/annotations/{entry.annotation}/",
                    json={"result": choice_result(label)})
        self.ledger.append(Entry(entry.task, entry.annotation, label, correction=True,
                                 at=time.time()))

    def run(self) -> None:
        try:
            self._work()
        except Exception as err:  # recorded; the reconciliation names it
            self.error = f"{err.__class__.__name__}: {err}"

    def _work(self) -> None:
        while True:
            if self.to_correct and self.rng.random() < 0.3:   # "oops", on an earlier one
                self.correct(*self.to_correct.pop(self.rng.randrange(len(self.to_correct))))
            if self.collected.is_set():
                break
            task = self.next_task()
            if task is None:
                self.collected.wait(1.0)
                continue
            started = time.time()
            time.sleep(self.rng.uniform(0, self.think_s))
            right = self.truth[task["data"]["item"]]
            if self.rng.random() < self.skip_rate:
                label = None
            elif self.rng.random() < self.mistake_rate:
                label = self.rng.choice([c for c in self.classes if c != right])
            else:
                label = right
            entry = self.post(task["id"], label, time.time() - started)
            self.ledger.append(entry)
            if label is not None and label != right and self.rng.random() < self.correct_rate:
                self.to_correct.append((entry, right))
        while self.to_correct:          # the last corrections, once the round is collected
            self.correct(*self.to_correct.pop())

    def last_words(self) -> dict[int, Entry]:
        """Annotation id → the last thing this person made it say."""
        out = {}
        for e in self.ledger:
            out[e.annotation] = e
        return out


# ------------------------------------------------------------------ a person in a real browser
class BrowserPerson:
    """A person at Label Studio in headless Chromium (``tests/conftest.py``'s ``chromium``):
    logs in, picks "Label All Tasks" on the data manager's labelling button (``stream_mode``
    ``all``: Label Studio keeps the choice in the browser; its stream is then the project's
    queue under Label Studio's task locks, as ``/next`` is for the scripted people), opens the
    round's link in labelling mode, picks a class by its key, submits with Ctrl+Enter, and goes
    on while the round is open (``collected`` not set; an empty stream is looked at again every
    few seconds), finishing the task in hand. Keeps the keys submitted, in order
    (``submitted``)."""

    def __init__(self, url: str, classes: list[str], shots: Path, collected: threading.Event, *,
                 seed: int = 0, stream_mode: Optional[str] = "all"):
        from tests.conftest import chromium
        from selenium.webdriver.common.action_chains import ActionChains

        self.url, self.classes, self.collected = url, classes, collected
        self.stream_mode = stream_mode
        self.driver = chromium(shots)
        self.keys = ActionChains(self.driver)
        self.shots = shots
        self.rng = random.Random(seed)
        self.submitted: list[tuple[str, float]] = []
        self.error: Optional[str] = None

    def wait(self, until, seconds: float = 60):
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, seconds, poll_frequency=0.2,
                             ignored_exceptions=(StaleElementReferenceException,)).until(until)

    def log_in(self, email: str, password: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        self.driver.get(self.url + "/user/login")
        self.wait(lambda d: d.find_elements(By.NAME, "email"))
        self.driver.find_element(By.NAME, "email").send_keys(email)
        self.driver.find_element(By.NAME, "password").send_keys(password + Keys.ENTER)
        self.wait(lambda d: "/user/login" not in d.current_url)
        if self.stream_mode:   # the labelling button's choice, which Label Studio keeps here
            self.driver.execute_script("localStorage.setItem('dm:labelstream:mode', "
                                       "arguments[0])", self.stream_mode)

    def checked(self) -> list[str]:
        from selenium.webdriver.common.by import By

        return [b.text.split("[")[0].strip() for b in
                self.driver.find_elements(By.CSS_SELECTOR, ".ant-checkbox-wrapper-checked")]

    def ready(self) -> bool:
        from selenium.webdriver.common.by import By

        return bool(self.driver.find_elements(By.CSS_SELECTOR, ".ant-checkbox-wrapper"))

    def done(self) -> bool:
        return bool(self.driver.find_elements("xpath", f"//*[text()='{NO_MORE_TASKS}']"))

    def shown(self) -> str:
        """What identifies the task on the page: the image Label Studio loaded for it."""
        from selenium.webdriver.common.by import By

        return next((i.get_attribute("src") for i in self.driver.find_elements(By.TAG_NAME, "img")
                     if (i.get_attribute("src") or "").startswith(("blob:", "data:", "http"))),
                    "")

    def label_until_done(self, round_url: str, limit_s: float) -> None:
        try:
            self._label(round_url, limit_s)
        except Exception as err:
            self.error = f"{err.__class__.__name__}: {err}"
            try:
                self.driver.save_screenshot(str(self.shots / "browser-annotator-error.png"))
            except Exception:
                pass

    def _label(self, round_url: str, limit_s: float) -> None:
        from selenium.webdriver.common.keys import Keys

        deadline = time.monotonic() + limit_s
        stream = round_url + ("&" if "?" in round_url else "?") + "labeling=1"
        self.driver.get(stream)
        while time.monotonic() < deadline and not self.collected.is_set():
            self.wait(lambda d: self.done() or (self.ready() and self.shown()))
            if self.done():
                if self.collected.wait(3.0):
                    break
                self.driver.get(stream)                 # anything back in the queue?
                continue
            before = self.shown()
            key = self.rng.choice(self.classes)
            if self.checked() != [key]:                 # the guess pre-selected may be it
                self.keys.send_keys(key).perform()
                self.wait(lambda d: self.checked() == [key], 20)
            self.keys.key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
            self.wait(lambda d: self.done() or self.shown() not in ("", before))
            self.submitted.append((key, time.time()))
            if len(self.submitted) == 1:
                self.driver.save_screenshot(str(self.shots / "browser-annotator-first.png"))
        self.driver.save_screenshot(str(self.shots / "browser-annotator-last.png"))

    def quit(self) -> None:
        self.driver.quit()


# ------------------------------------------------------------------ one round, five people
def digits(work: Path):
    """The shipped digits: the repository's ``splits/manifest.csv`` over ``data/`` when both
    are there, else built under ``work`` (as ``sage-ada data split`` builds them)."""
    from components.data.split import build_manifest, read_manifest

    manifest, root = REPO / "splits/manifest.csv", REPO / "data"
    if manifest.is_file() and root.is_dir():
        return read_manifest(manifest), root
    from components.data.shipped import build_shipped

    root = Path(work) / "digits" / "data"
    build_shipped(root)
    return build_manifest(root, source="mnist", target="optdigits", seed=0), root


def round_rows(manifest, n: int):
    """``n`` target images: the target pool (``target_train``) first; where it holds fewer, the
    target's other images fill the round (what is labelled does not change how people collide).
    Returns the rows and a note saying so (empty when the pool sufficed)."""
    import pandas as pd

    pool = manifest[manifest.split == "target_train"]
    if len(pool) >= n:
        return pool.head(n), ""
    rest = manifest[manifest.split.str.startswith("target") & (manifest.split != "target_train")]
    rows = pd.concat([pool, rest.head(n - len(pool))])
    return rows, (f"the shipped digits' target pool holds {len(pool)} images: {len(rows) - len(pool)} "
                  f"of the target's test images fill the round to {len(rows)}")


@dataclass
class RoundResult:
    n_tasks: int
    wall_s: float                       # labelling starts → the run's collect has the labels
    people_s: float                     # labelling starts → the last person stopped
    annotations: int                    # saved (labels and skips), corrections not counted
    in_round: int                       # of which saved before the collect returned
    corrections: int
    skips: int
    server_errors: int                  # retried (SQLite locked, dropped connections)
    adopted: int                        # saved although Label Studio answered with an error
    browser_submitted: int
    browser_note: str
    reconciliation: dict = field(default_factory=dict)
    per_person: dict = field(default_factory=dict)


def concurrent_round(server: dict, manifest, data_root: Path, *, n_tasks: int,
                     n_annotators: int = 5, browser: bool = True, poll_interval_s: float = 10.0,
                     shots: Optional[Path] = None, seed: int = 0, think_s: float = 0.05,
                     collect_timeout_s: float = 3600.0, name: str = "five-at-once",
                     log=print) -> RoundResult:
    """One round of ``n_tasks`` pushed by a ``LabelStudioOracle``, labelled by ``n_annotators``
    scripted people (and one in a browser) at once while the oracle's ``collect`` waits in
    another thread; then the reconciliation (``reconcile``)."""
    from components.data.split import class_list

    classes = class_list(manifest)
    rows, _ = round_rows(manifest, n_tasks)
    oracle = make_oracle(server, classes, data_root, name, poll_interval_s=poll_interval_s)
    polls: list[float] = []                 # when each of the run's polls started
    oracle.on_poll = lambda handle: polls.append(time.time())
    ids = list(rows.sample_id)
    rng = random.Random(seed)
    context = {sid: {"path": path, "score": rng.random(), "prediction": rng.choice(classes),
                     "confidence": 0.5} for sid, path in zip(rows.sample_id, rows.path)}
    start = time.perf_counter()
    handle = oracle.request(ids, 1, context=context)
    log(f"  pushed {len(ids)} tasks in {time.perf_counter() - start:.1f} s")
    truth = {oracle.item(sid): str(label) for sid, label in zip(rows.sample_id, rows.label)}
    view = int(handle["url"].split("tab=")[1].split("&")[0]) if "tab=" in handle["url"] else None

    emails = [f"annotator{i + 1}@example.com" for i in range(n_annotators)]
    people = emails + (["browser@example.com"] if browser else [])
    passwords = add_annotators(server, people)
    collected = threading.Event()          # the run has its labels: the round is over
    scripted = [ScriptedAnnotator(Session(server["url"], e, passwords[e]), handle["project_id"],
                                  view, truth, classes, collected, seed=seed * 100 + i,
                                  think_s=think_s)
                for i, e in enumerate(emails)]
    person, browser_note = None, ""
    if browser:
        try:
            person = BrowserPerson(server["url"], classes,
                                   Path(shots or Path(server["env"]["LABEL_STUDIO_DATA"]) / "shots"),
                                   collected, seed=seed)
            person.log_in("browser@example.com", passwords["browser@example.com"])
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # no chromium here (pytest.skip's exception included)
            browser_note = f"no browser person: {err.__class__.__name__}: {err}"[:300]
            log(f"  {browser_note}")
            if person is not None:
                person.quit()
            person = None

    with ThreadPoolExecutor(n_annotators + 2) as pool:
        t0 = time.perf_counter()
        returned = {}

        def the_run():                     # the run waits for its round
            try:
                return oracle.collect(handle, collect_timeout_s)
            finally:
                returned["at"], returned["s"] = time.time(), time.perf_counter() - t0
                collected.set()

        waiting = pool.submit(the_run)
        workers = [pool.submit(a.run) for a in scripted]
        if person is not None:
            workers.append(pool.submit(person.label_until_done, handle["url"], collect_timeout_s))
        for w in workers:
            w.result()
        people_s = time.perf_counter() - t0
        try:
            labels = waiting.result()
            details = oracle.describe(handle)
            collect_error = ""
        except Exception as err:
            labels, details = None, {}
            collect_error = f"{err.__class__.__name__}: {err}"
        wall = returned["s"]
        last_look = polls[-1] if polls else returned["at"]
    if person is not None:
        person.quit()
    log(f"  the run's collect returned after {wall:.1f} s; the last person stopped after "
        f"{people_s:.1f} s"
        + (f" with {collect_error}" if collect_error else ""))
    oracle.on_poll = None
    if labels is None:   # what the run would have had: one poll
        state = oracle.poll(handle)
        labels = {s: r.label for s, r in state.items() if r.label is not None}
        details = {s: {"annotator": r.annotator, "skipped": r.skipped,
                       "annotators": list(r.annotators), "n_annotations": r.n_annotations}
                   for s, r in state.items()}
    corrections = oracle.relabelled(labels)          # read again, as before the next adaptation
    users = {u.id: u.email for u in oracle.client.users.list()}
    tasks = [t for t in oracle.client.tasks.list(project=handle["project_id"], fields="all",
                                                  page_size=500)]
    result = reconcile(
        tasks=tasks, sample_of={oracle.item(s): s for s in ids}, labels=labels, details=details,
        corrections=corrections, scripted=scripted, users=users,
        browser=(person.submitted if person is not None else None),
        browser_user=next((i for i, e in users.items() if e == "browser@example.com"), None),
        last_look=last_look)
    if collect_error:
        result["problems"].insert(0, f"the run's collect failed: {collect_error}")
    for who in scripted + ([person] if person is not None else []):
        if who.error:
            result["problems"].insert(0, f"{getattr(who, 'email', 'browser')} stopped: {who.error}")
    if person is not None and person.error:
        browser_note = f"the browser person stopped: {person.error}"[:300]
    entries = [e for a in scripted for e in a.ledger]
    made = [e for e in entries if not e.correction]
    return RoundResult(
        n_tasks=len(ids), wall_s=wall, people_s=people_s,
        annotations=len(made) + (len(person.submitted) if person else 0),
        in_round=sum(e.at <= returned["at"] for e in made) + sum(
            at <= returned["at"] for _, at in (person.submitted if person else [])),
        corrections=sum(e.correction for e in entries), skips=sum(e.skip for e in made),
        server_errors=sum(len(a.s.errors) for a in scripted),
        adopted=sum(e.adopted for e in made),
        browser_submitted=len(person.submitted) if person else 0, browser_note=browser_note,
        reconciliation=result,
        per_person={**{a.email: {"annotations": sum(not e.correction for e in a.ledger),
                                 "skips": sum(e.skip for e in a.ledger),
                                 "corrections": sum(e.correction for e in a.ledger),
                                 "server_errors": len(a.s.errors)} for a in scripted},
                    **({"browser@example.com": {"annotations": len(person.submitted)}}
                       if person else {})})


def make_oracle(server: dict, classes: list[str], data_root: Path, name: str, **options):
    """The run's oracle on ``server``, bound to a project of its own: one annotator per task,
    majority, a timeout that fails (options override). Images go where the server serves them
    (its ``media``) where the oracle copies them (``media_root``)."""
    import inspect

    from components.oracle.label_studio import LabelStudioOracle

    settings = dict(progress=False, on_timeout="fail", annotators_per_task=1,
                    resolve_rule="majority", **options)
    if "media_root" in inspect.signature(LabelStudioOracle).parameters and server.get("media"):
        settings.setdefault("media_root", server["media"])
    oracle = LabelStudioOracle(url=server["url"], api_key=server["token"], classes=classes,
                               data_root=data_root, experiment=name, **settings)
    oracle.bind(name)
    return oracle


def reconcile(*, tasks, sample_of: dict, labels: dict, details: dict, corrections: dict,
              scripted: list, users: dict, browser: Optional[list], browser_user: Optional[int],
              last_look: float, per_task: int = 1) -> dict:
    """Every ledger entry against Label Studio, and every task against what the run has.

    * ``lost``: an annotation a person made that Label Studio no longer holds as they left it,
      or whose label the run does not have (neither collected nor read again as a correction);
    * ``duplicated``: annotations beyond ``per_task`` on a task that has more labels than asked,
      annotations Label Studio holds for a person that their ledger does not know (a save
      counted twice), a person with two annotations on one task;
    * ``misattributed``: a label credited to someone other than the person who gave it, or a
      skip credited to someone who did not skip.
    Each is listed in ``problems`` (task, annotation, who, what Label Studio holds)."""
    problems: list[str] = []
    lost = duplicated = misattributed = 0
    email_of = users
    held = {}                                   # annotation id → (task, annotation)
    for t in tasks:
        for a in t.annotations or []:
            held[a["id"]] = (t, a)

    # every ledger entry is in Label Studio, as its person last left it
    for person in scripted:
        words = person.last_words()
        for ann, e in words.items():
            if ann not in held:
                lost += 1
                problems.append(f"lost: {person.email}'s annotation {ann} on task {e.task} "
                                f"({'skip' if e.skip else e.label}) is not in Label Studio")
                continue
            t, a = held[ann]
            theirs = None if a.get("was_cancelled") else _choice(a)
            if t.id != e.task or a.get("completed_by") != person.s.user_id or theirs != e.label:
                lost += 1
                problems.append(f"lost: {person.email}'s annotation {ann} on task {e.task} said "
                                f"{e.label!r}; Label Studio holds {theirs!r} on task {t.id} by "
                                f"user {a.get('completed_by')}")
        known = set(words)
        for ann, (t, a) in held.items():
            if a.get("completed_by") == person.s.user_id and ann not in known:
                duplicated += 1
                problems.append(f"duplicated: annotation {ann} on task {t.id} by {person.email} "
                                "is in Label Studio but not in their ledger (saved twice?)")

    # the browser person: their annotations, found by their user, match the keys they pressed
    if browser is not None:
        theirs = sorted((ann for ann, (t, a) in held.items()
                         if a.get("completed_by") == browser_user), key=lambda ann: ann)
        got = [_choice(held[ann][1]) for ann in theirs]
        pressed = [k for k, _ in browser]
        if got != pressed:
            missing = max(0, len(pressed) - len(got))
            extra = max(0, len(got) - len(pressed))
            lost += missing + sum(1 for x, y in zip(got, pressed) if x != y)
            duplicated += extra
            problems.append(f"browser person: pressed {pressed}, Label Studio holds {got} "
                            f"(annotations {theirs})")

    # every task against what the run has: collected, then corrections read again
    run_has = dict(labels)
    credited = {s: (d or {}).get("annotator") for s, d in details.items()}
    for s, c in corrections.items():
        run_has[s], credited[s] = c["new"], c["by"]
    late = 0
    for t in tasks:
        sid = sample_of.get((t.data or {}).get("item"))
        if sid is None:
            continue
        anns = t.annotations or []
        given = [a for a in anns if not a.get("was_cancelled") and _choice(a) is not None]
        skips = [a for a in anns if a.get("was_cancelled")]
        authors = Counter(a.get("completed_by") for a in anns)
        for who, n in authors.items():
            if n > 1:
                duplicated += n - 1
                problems.append(f"duplicated: task {t.id} holds {n} annotations by "
                                f"{email_of.get(who, who)}")
        if len(given) > per_task:
            duplicated += len(given) - per_task
            problems.append(
                f"duplicated: task {t.id} holds {len(given)} labels, {per_task} asked: "
                + ", ".join(f"annotation {a['id']} {_choice(a)!r} by "
                            f"{email_of.get(a.get('completed_by'))} at {a.get('created_at')}"
                            for a in given))
        if not given:
            if sid in run_has:
                misattributed += 1
                problems.append(f"misattributed: task {t.id} was only skipped, yet the run has "
                                f"label {run_has[sid]!r} for it")
            elif skips:
                who = credited.get(sid)
                if who not in {a.get("completed_by") for a in skips}:
                    misattributed += 1
                    problems.append(f"misattributed: the skip of task {t.id} is credited to "
                                    f"{email_of.get(who, who)}, who did not skip it")
            else:
                problems.append(f"unanswered: task {t.id} has no annotation")
            continue
        last = max(given, key=lambda a: (str(a.get("updated_at") or a.get("created_at")), a["id"]))
        said, author = _choice(last), last.get("updated_by") or last.get("completed_by")
        if sid not in run_has:
            lost += 1
            after = _ts(last.get("created_at")) > last_look
            skipped_by = [email_of.get(a.get("completed_by")) for a in skips]
            if after and skipped_by:
                late += 1
            problems.append(
                f"lost: task {t.id}'s label {said!r} by {email_of.get(author)} (annotation "
                f"{last['id']}, saved {last.get('created_at')}"
                + (", after the run's last poll began" if after else "") + ") is not in what the "
                f"run has (its details: {details.get(sid)})"
                + (f"; {', '.join(skipped_by)} had skipped it and Label Studio served it again"
                   if skipped_by else ""))
            continue
        if run_has[sid] != said and len(given) <= per_task:
            lost += 1
            problems.append(f"lost: task {t.id}: {email_of.get(author)} last said {said!r} "
                            f"(annotation {last['id']}), the run has {run_has[sid]!r}")
        if credited.get(sid) != author and len(given) <= per_task:
            misattributed += 1
            problems.append(f"misattributed: task {t.id}'s label {said!r} is credited to "
                            f"{email_of.get(credited.get(sid), credited.get(sid))}, given by "
                            f"{email_of.get(author, author)}")
    return {"lost": lost, "duplicated": duplicated, "misattributed": misattributed,
            "lost_skipped_then_served_again": late, "tasks_checked": len(tasks),
            "annotations_held": len(held), "problems": problems}


def _ts(value) -> float:
    """An ISO timestamp of Label Studio (or a datetime) as seconds since the epoch."""
    from datetime import datetime

    if value is None:
        return 0.0
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------ two defects, step by step
def _two_tasks(server: dict, manifest, data_root: Path, name: str, emails: list[str]):
    """A round of two tasks in a project of its own, and a logged-in session per e-mail."""
    from components.data.split import class_list

    oracle = make_oracle(server, class_list(manifest), data_root, name, poll_interval_s=0.2)
    rows = manifest[manifest.split == "target_train"].head(2)
    ids = list(rows.sample_id)
    handle = oracle.request(ids, 1, context={s: {"path": p} for s, p in zip(ids, rows.path)})
    passwords = add_annotators(server, emails)
    return oracle, handle, ids, [Session(server["url"], e, passwords[e]) for e in emails]


def skipped_then_served_again(server: dict, manifest, data_root: Path) -> dict:
    """A skips task 1, then B asks for a task. Under Label Studio's default skip queue
    (``REQUEUE_FOR_OTHERS``, which the oracle's projects kept until issue 31) B was served task
    1 again and A labelled task 2; the run's poll found the round answered (a skip counts as an
    answer) and collected it; then B's label on task 1 never reached the run. Under
    ``IGNORE_SKIPPED`` (the projects' setting now) B gets task 2. Returns what happened; ``reaches_run``: whether the run has B's label (collected,
    or read again as ``relabelled`` reads corrections before the next adaptation)."""
    from components.oracle.label_studio import choice_result

    oracle, handle, ids, (a, b) = _two_tasks(server, manifest, data_root, "skip-served-again",
                                             ["skipper@example.com", "second@example.com"])
    project = handle["project_id"]
    item_task = {t.data["item"]: t.id for t in oracle.tasks(project).values()}
    first = a.call("GET", f"/api/projects/{project}/next/").json()["id"]
    skip = a.call("POST", f"/api/tasks/{first}/annotations/?was_cancelled=1", ok=(201,),
                  json={"result": [], "was_cancelled": True, "project": project}).json()["id"]
    served = b.call("GET", f"/api/projects/{project}/next/").json()
    if served.get("id") == first:     # served again: A labels the other task
        other, who = a.call("GET", f"/api/projects/{project}/next/").json()["id"], a
    else:                             # the skip answered task 1: B was given the other one
        other, who = served["id"], b
    who.call("POST", f"/api/tasks/{other}/annotations/", ok=(201,),
             json={"result": choice_result("1"), "project": project})
    labels = oracle.collect(handle, timeout=30)
    out = {"task": first, "skip": skip, "served_to_second": served.get("id"),
           "served_again": served.get("id") == first, "collected": labels,
           "skipped": {s: d["skipped"] for s, d in oracle.describe(handle).items()}}
    if out["served_again"]:
        given = b.call("POST", f"/api/tasks/{first}/annotations/", ok=(201,),
                       json={"result": choice_result("7"), "project": project}).json()["id"]
        sid = next(s for s in ids if item_task[oracle.item(s)] == first)
        has = {**labels, **{s: c["new"] for s, c in oracle.relabelled(labels).items()}}
        out.update(label_annotation=given, sample=sid, reaches_run=has.get(sid) == "7",
                   run_has=has.get(sid))
    else:
        out["reaches_run"] = True      # nobody was handed the skipped task: nothing to lose
    return out


def round_link_collides(server: dict, manifest, data_root: Path) -> dict:
    """Two people follow the round's link (the oracle's ``handle["url"]``: the round's tab) into
    labelling, with a browser's default settings: Label Studio's data manager asks for the next
    task with the tab's filters (``POST /api/dm/actions?id=next_task``, the body Chromium sends,
    captured from its network log), which puts it in its "Data manager queue": task locks are
    not looked at. Returns the task and queue each was served; ``same``: the same task."""
    oracle, handle, _, people = _two_tasks(server, manifest, data_root, "round-link",
                                           ["link1@example.com", "link2@example.com"])
    project = handle["project_id"]
    tab = int(handle["url"].split("tab=")[1].split("&")[0])
    filters = people[0].call("GET", f"/api/dm/views/{tab}/", params={"project": project}) \
        .json()["data"].get("filters") or {"conjunction": "and", "items": []}
    served = [p.call("POST", "/api/dm/actions", params={"id": "next_task", "tabID": tab,
                                                        "project": project}, json={
        "ordering": [], "selectedItems": {"all": False, "included": []}, "filters": filters,
        "project": str(project)}).json() for p in people]
    return {"tasks": [x.get("id") for x in served], "queues": [x.get("queue") for x in served],
            "same": served[0].get("id") == served[1].get("id")}


# ------------------------------------------------------------------ the driver's part
def run(args, work: Path) -> dict:
    """``benchmarks/team_scale.py --part annotators``: for each database Label Studio can keep
    its projects in (SQLite, server.sh's default on one machine; PostgreSQL, a team's, where
    installed), Label Studio started by its script in ``work``, one round of ``args.tasks``
    labelled by ``args.annotators`` people at once and one in a real browser, and the
    reconciliation's figures; then the two defects found on the way, step by step."""
    from benchmarks.scale import figure
    from components.config import load_config

    manifest, root = digits(Path(work))
    rows, short = round_rows(manifest, args.tasks)
    interval = load_config(REPO / "params.yaml").label_studio.poll_interval_s
    databases = ["sqlite"] + (["postgresql"] if postgres_installed() else [])
    figures = {"round tasks": figure(len(rows), "tasks", note=short)}
    for database in databases:
        print(f"  [{database}] {args.tasks} tasks, {args.annotators} annotators + 1 browser")
        with label_studio_server(Path(work) / f"label-studio-annotators-{database}",
                                 database) as server:
            r = concurrent_round(server, manifest, root, n_tasks=args.tasks,
                                 n_annotators=args.annotators, browser=True,
                                 poll_interval_s=interval,
                                 shots=Path(work) / f"annotator-shots-{database}")
            if database == databases[-1]:
                skip = skipped_then_served_again(server, manifest, root)
                link = round_link_collides(server, manifest, root)
        rec = r.reconciliation
        order = ("stopped", "the run's collect", "lost", "misattributed", "unanswered")
        problems = sorted(rec["problems"], key=lambda p: next(
            (i for i, k in enumerate(order) if p.startswith(k) or k in p[:40]), len(order)))
        for line in problems[:30]:
            print("   ", line)
        if len(problems) > 30:
            print(f"    ... and {len(problems) - 30} more")
        lost = [p for p in problems if p.startswith("lost")]
        who = f"{args.annotators} scripted annotators + 1 in a real browser"
        if r.browser_note:
            who += f" ({r.browser_note})"
        tag = f"[{database}] "
        figures.update({
            tag + "annotations lost": figure(
                rec["lost"], "annotations", at_most=0,
                note=(f"{rec['lost_skipped_then_served_again']} of them: a label on a task "
                      "skipped before, saved after the run's last poll; "
                      + " | ".join(lost[:3]) if rec["lost"] else "")),
            tag + "annotations duplicated": figure(
                rec["duplicated"], "annotations", at_most=0,
                note=("Label Studio handed tasks to two people at once (on SQLite its next-task "
                      "lock is not atomic)" if rec["duplicated"] else "")),
            tag + "annotations misattributed": figure(rec["misattributed"], "annotations",
                                                      at_most=0),
            tag + "round wall time (labelling starts to the run's collect returning)": figure(
                r.wall_s, "s", note=f"{who}; poll interval {interval:g} s"),
            tag + "annotations per second": figure(
                r.in_round / r.wall_s, "annotations/s",
                note="saved before the collect returned, per second of the round"),
            tag + "annotations saved": figure(
                r.annotations, "annotations",
                note=f"{r.skips} skips; {r.browser_submitted} in the browser"),
            tag + "corrections (PATCH of one's own earlier label)": figure(r.corrections,
                                                                           "corrections"),
            tag + "server errors retried": figure(
                r.server_errors, "requests", note=f"{r.adopted} saves Label Studio kept despite "
                                                  "the error (found, not sent again)"),
        })
    print(f"  skipped, then served again: {skip}")
    print(f"  two people on the round's link: {link}")
    figures["a label on a skipped task served again, given after the run collected, lost"] = \
        figure(0 if skip["reaches_run"] else 1, "annotations", at_most=0,
               note=(f"task {skip['task']}: skipped (annotation {skip['skip']}), served again to "
                     f"another person, the run collected it as skipped; their label "
                     f"(annotation {skip.get('label_annotation')}) never reaches the run"
                     if not skip["reaches_run"] else "the skipped task was not served again"))
    figures["two people following the round's link are served the same task"] = figure(
        1 if link["same"] else 0, "collisions", at_most=0,
        note=f"tasks {link['tasks']}, queues {link['queues']}")
    return figures
