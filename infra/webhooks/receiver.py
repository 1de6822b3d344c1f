"""Resumes suspended runs when annotators finish a round: Label Studio webhooks → Prefect.

A run deployed with ``label_studio.wait: suspend`` registers a webhook on its Label Studio
project whose URL names its flow run and round (``/label-studio?flow_run=…&project=…&round=…``)
and whose headers carry the team's webhook secret (``components.secrets``). On each annotation
event this receiver answers at once (Label Studio waits only a second), then checks the round in
the background (events of one round are merged: while its check runs, more events ask for one
more check after it, not one each; a check reads only that round's tasks) and resumes the flow
run when every task has its answers (``round_status``: the run's own definition of answered,
labels outside the class list and annotations without a class not counted; the latter are asked
again, as the run asks: ``ask_again``) or its wait has timed out. Every ``SAGE_ADA_SWEEP_S``
seconds it also checks every webhook that points here (a missed or failed call), and removes the
webhooks of runs that ended. It keeps no state of its own: the webhooks are the list of waiting
runs.

Who may call it (issue 32): a POST is acted on only with the secret in its header (compared in
constant time; none: 401, a wrong one: 403), for a flow run, project and round that a webhook
registered on that project names (else 403), with an action such a webhook sends, and a body of
at most ``MAX_BODY`` bytes (else 413). Refusals are logged without the secret. Label Studio's
users can see webhooks (the secret included) and make them, so nothing a check decides comes
from a webhook or a request: which round the run waits on, how it is judged and when its wait
times out come from the flow run's tag in Prefect (``WAIT_TAG``, set by ``flows/active_da.py``),
and a call about any other round does nothing. A round answered while its run is still
suspending is resumed as soon as the suspension lands.

Settings (environment): PREFECT_API_URL; LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or the
credentials file of infra/label-studio/server.sh); the webhook secret (``SAGE_ADA_SECRETS``'s
``webhook-secret``, or SAGE_ADA_WEBHOOK_SECRET); SAGE_ADA_WEBHOOK_HOST (127.0.0.1; 0.0.0.0 in
a container) and SAGE_ADA_WEBHOOK_PORT (8092); SAGE_ADA_WEBHOOK_URL (this receiver as Label
Studio reaches it, default http://127.0.0.1:<port>); SAGE_ADA_SWEEP_S (300);
SAGE_ADA_CHECK_GAP_S (5: the least time between two checks of one round while its events keep
coming).
"""
from __future__ import annotations

import hmac
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from components.oracle.base import wait_over  # noqa: E402
from components.oracle.label_studio import (  # noqa: E402
    WEBHOOK_ACTIONS, WEBHOOK_SECRET_HEADER, ask_again, classes_digest, connect,
    outside_class_list, read_api_key, read_wait_tag, round_status, without_a_class)
from components.secrets import WEBHOOK_SECRET, read_secret, secrets_dir  # noqa: E402

MAX_BODY = 64 * 1024          # Label Studio's calls (no payload) are under 100 bytes
SUSPENDING_S = 60             # how long a round answered while its run suspends is retried
HOOKS_FRESH_S = 5             # how long a project's list of webhooks is trusted


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", flush=True)


class PrefectRuns:
    """What the receiver asks Prefect about a flow run (the one source it trusts)."""

    def _read(self, flow_run: str):
        from prefect import get_client
        from prefect.exceptions import ObjectNotFound

        try:
            with get_client(sync_client=True) as prefect:
                return prefect.read_flow_run(flow_run)
        except (ObjectNotFound, ValueError):   # no such run, or not an id at all
            return None
        except Exception as err:   # Prefect down, or it refuses this receiver's login
            log(f"could not read flow run {flow_run} from Prefect: "
                f"{err.__class__.__name__}: {str(err)[:200]}")
            return None

    def waiting(self, flow_run: str) -> Optional[dict]:
        """The round it waits on, how that round is judged and when the wait times out: its
        ``WAIT_TAG`` tag (``read_wait_tag``); None: it waits on nothing Prefect knows of."""
        run = self._read(flow_run)
        return read_wait_tag(run.tags) if run is not None else None

    def suspending(self, flow_run: str) -> bool:
        """Still running or about to (not paused, not ended): its suspension is on its way."""
        run = self._read(flow_run)
        state = run.state if run is not None else None
        return state is not None and not state.is_final() and not state.is_paused()


class Receiver:
    def __init__(self, client, public_url: str, gap_s: float = 0.0,
                 runs: Optional[PrefectRuns] = None):
        self.client, self.public_url = client, public_url.rstrip("/")
        self.gap_s = gap_s                # the least time between two checks of one round
        self.runs = runs or PrefectRuns()   # what Prefect knows of a flow run
        self._hooks: dict[int, tuple[float, list[dict]]] = {}   # project → (read at, queries)
        self._lock = threading.Lock()  # one check at a time: events come in bursts
        self._queue = threading.Lock()
        self._busy: set[tuple] = set()    # rounds being checked
        self._again: dict[tuple, tuple] = {}   # ... with events since their check began: the
                                               # newest event's (query, reason)
        self.checks = 0                   # checks made (for the log and the tests)

    def registered(self, flow_run: str, project: str, round_: str) -> Optional[dict]:
        """The query of the webhook on ``project`` that points here for this flow run and
        round, or None: what a request may ask to be checked. A project's webhooks are read
        again when older than ``HOOKS_FRESH_S`` (a removed webhook stops counting), or when a
        request names one not seen, at most once a second (so made-up names cannot have
        Label Studio asked more often than that)."""
        try:
            key = int(project)
        except ValueError:
            return None
        read_at, _ = self._hooks.get(key, (float("-inf"), []))
        age = time.monotonic() - read_at
        found = self._find(key, flow_run, round_)
        if (found is None and age >= 1.0) or age >= HOOKS_FRESH_S:
            from label_studio_sdk.core.api_error import ApiError

            try:
                hooks = self.client.webhooks.list(project=str(key))
            except ApiError as err:
                if err.status_code not in (400, 404):   # 400: Label Studio has no such project
                    raise
                hooks = []
            self._hooks[key] = (time.monotonic(), [
                q for hook in hooks if getattr(hook, "project", None) == key
                and (q := self._points_here(hook.url)) is not None and q.get("project") == str(key)])
            found = self._find(key, flow_run, round_)
        return found

    def _find(self, project: int, flow_run: str, round_: str) -> Optional[dict]:
        for query in self._hooks.get(project, (0.0, []))[1]:
            if (query.get("flow_run"), query.get("round")) == (flow_run, round_):
                return query
        return None

    def _points_here(self, url: str) -> Optional[dict]:
        if not url.startswith(self.public_url + "/label-studio?"):
            return None
        return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}

    def enqueue(self, query: dict[str, str], reason: str) -> bool:
        """Check ``query``'s round soon, in the background. Events of a round that is being
        checked are merged: they ask for one more check when it ends (an annotation saved
        during a check may not be in what it read), however many arrive. False: merged."""
        key = (query["flow_run"], query["project"], query["round"])
        with self._queue:
            if key in self._busy:
                self._again[key] = (query, reason)   # a re-registered webhook's newer query
                return False
            self._busy.add(key)
        threading.Thread(target=self._drain, args=(key, query, reason), daemon=True).start()
        return True

    def _drain(self, key: tuple, query: dict[str, str], reason: str) -> None:
        while True:
            try:
                self.check(query, reason)
            except Exception as err:
                log(f"check of flow run {query['flow_run']} failed: "
                    f"{err.__class__.__name__}: {err}")
            with self._queue:
                if key not in self._again:
                    self._busy.discard(key)
                    return
            # people are labelling: one more check, after a pause (a check of 1,000 tasks takes
            # seconds of Label Studio's time; events that come meanwhile join this one)
            time.sleep(self.gap_s)
            with self._queue:
                query, reason = self._again.pop(key)

    def check(self, query: dict[str, str], reason: str) -> str:
        """Resume the flow run if its round is answered (``round_status``: the run's own
        definition, so a resumed run collects and does not suspend again) or its wait timed
        out; says what happened (for the log and the tests). A label outside the class list is
        not an answer: the run keeps waiting, and the log says which label to change. Nor is an
        annotation without a class: it is asked again (``ask_again``, as the run does: deleted,
        the task back in the queue, the log and the round's notice name the task and who). Where
        the project's class list is no longer the run's (its labelling config was edited), the run
        is resumed to say so (``LabelStudioOracle.complete`` fails with what to fix)."""
        flow_run, round_, project = query["flow_run"], int(query["round"]), int(query["project"])
        wait = self.runs.waiting(flow_run)
        if wait is None or (wait["project"], wait["round"]) != (project, round_):
            return "not waiting"     # Prefect says this run waits on no such round
        with self._lock:
            self.checks += 1
            why = "timed out" if wait_over(wait["deadline"]) else None
            if why is None:
                status = round_status(self.client, project, round_, per_task=wait["per_task"])
                if wait["classes"] != classes_digest(status.classes):
                    why = "has another class list in Label Studio than the run"
                elif status.answered:
                    why = "answered"
                else:
                    asked = ask_again(self.client, project, status.empty)
                    if asked:
                        log(f"flow run {flow_run}, round {round_}: {without_a_class(asked)}")
                    if status.rejected:
                        log(f"flow run {flow_run}, round {round_}: {status.n_answered} of "
                            f"{status.n_tasks} tasks answered; " + outside_class_list(
                                [(f"item {r['item']} (task {r['task']}, annotation "
                                  f"{r['annotation']})", r["label"]) for r in status.rejected],
                                status.classes))
                    return "waiting"
        outcome = self._resume(flow_run, wait, SUSPENDING_S if reason == "webhook" else 0.0)
        if outcome == "resumed":
            log(f"resumed flow run {flow_run}: round {round_} {why} ({reason})")
        return outcome

    def _resume(self, flow_run: str, wait: dict, suspending_s: float) -> str:
        """Resume ``flow_run``. One that is still on its way to suspending (its round was
        answered between its last check and the suspension) is tried again each second for up
        to ``suspending_s``, rather than left to the next sweep, as long as it still waits on
        the same round (``wait``)."""
        from prefect.exceptions import ObjectNotFound
        from prefect.flow_runs import NotPausedError, resume_flow_run

        give_up = time.monotonic() + suspending_s
        while True:
            try:
                resume_flow_run(flow_run)
                return "resumed"
            except NotPausedError:
                if (time.monotonic() >= give_up or not self.runs.suspending(flow_run)
                        or self.runs.waiting(flow_run) != wait):
                    return "not suspended"
                time.sleep(1.0)
            except ObjectNotFound:
                return "no such flow run"

    def sweep(self) -> None:
        """Check every waiting run; drop the webhooks of runs that ended."""
        from prefect import get_client

        for hook in self.client.webhooks.list():
            if not hook.url.startswith(self.public_url + "/label-studio?"):
                continue
            query = {k: v[0] for k, v in parse_qs(urlparse(hook.url).query).items()}
            try:
                outcome = self.check(query, "sweep")
            except Exception as err:  # one bad webhook must not stop the others
                log(f"sweep: {hook.url}: {err.__class__.__name__}: {err}")
                continue
            if outcome in ("not suspended", "no such flow run", "not waiting"):
                with get_client(sync_client=True) as prefect:
                    try:
                        ended = prefect.read_flow_run(query["flow_run"]).state.is_final()
                    except Exception:
                        ended = outcome == "no such flow run"
                if ended:
                    self.client.webhooks.delete(id=hook.id)
                    log(f"removed the webhook of ended flow run {query['flow_run']}")


def create_app(receiver: Receiver, secret: str, max_body: int = MAX_BODY):
    """The receiver's web app (Starlette, from Prefect's own stack): ``GET /health`` and
    ``POST /label-studio``, which answers 202 at once and checks in the background, or refuses:
    401 without the secret, 403 with a wrong one or for a webhook nobody registered, 413 for a
    body over ``max_body``, 400 for anything a registered webhook would not send."""
    import anyio
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    expected = secret.encode()

    def refuse(request, code: int, why: str) -> JSONResponse:
        client = request.client.host if request.client else "?"
        log(f"refused {code} to {client}: {why}")   # never the secret
        return JSONResponse({"error": why}, status_code=code)

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def label_studio(request):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            return refuse(request, 413, f"body over {max_body} bytes")
        given = request.headers.get(WEBHOOK_SECRET_HEADER)
        if given is None:
            return refuse(request, 401, f"no {WEBHOOK_SECRET_HEADER} header")
        if not hmac.compare_digest(given.encode(), expected):
            return refuse(request, 403, f"wrong {WEBHOOK_SECRET_HEADER}")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                return refuse(request, 413, f"body over {max_body} bytes")
        try:
            action = json.loads(body or b"{}").get("action")
        except (ValueError, AttributeError, RecursionError):
            return refuse(request, 400, "the body is not Label Studio's JSON")
        if action not in WEBHOOK_ACTIONS:
            return refuse(request, 400, f"action {str(action)[:40]!r} is not one a run's webhook sends")
        asked = {k: request.query_params.get(k) for k in ("flow_run", "project", "round")}
        if not all(asked.values()):
            return refuse(request, 400, "expected /label-studio?flow_run=&project=&round=")
        try:
            query = await anyio.to_thread.run_sync(
                receiver.registered, asked["flow_run"], asked["project"], asked["round"])
        except Exception as err:   # Label Studio down: the sweep checks the round later
            log(f"could not read the webhooks of project {asked['project'][:20]!r}: "
                f"{err.__class__.__name__}")
            return JSONResponse({"error": "Label Studio did not answer"}, status_code=503)
        if query is None:
            return refuse(request, 403, f"no webhook on project {asked['project'][:20]!r} for "
                                        f"flow run {asked['flow_run'][:40]!r} round "
                                        f"{asked['round'][:10]!r}")
        receiver.enqueue(query, "webhook")   # what the registered webhook says, not the request
        return JSONResponse({"status": "checking"}, status_code=202)

    return Starlette(routes=[Route("/health", health, methods=["GET"]),
                             Route("/label-studio", label_studio, methods=["POST"])])


def main() -> int:
    port = int(os.environ.get("SAGE_ADA_WEBHOOK_PORT", "8092"))
    public = os.environ.get("SAGE_ADA_WEBHOOK_URL") or f"http://127.0.0.1:{port}"
    ls_url = os.environ.get("LABEL_STUDIO_URL", "http://127.0.0.1:8080")
    credentials = os.environ.get("LABEL_STUDIO_CREDENTIALS", ".sage-ada/label-studio/credentials.env")
    if not os.environ.get("PREFECT_API_URL"):
        print("error: PREFECT_API_URL is not set; start the Prefect server "
              "(infra/prefect/server.sh start) and export what it prints", file=sys.stderr)
        return 2
    try:
        client = connect(ls_url, read_api_key(credentials))
    except Exception as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    secret = read_secret(WEBHOOK_SECRET)
    if not secret:
        print(f"error: no webhook secret: run `infra/webhooks/server.sh start` (it makes "
              f"{secrets_dir() / WEBHOOK_SECRET[0]}) or set {WEBHOOK_SECRET[1]}", file=sys.stderr)
        return 2
    receiver = Receiver(client, public, gap_s=float(os.environ.get("SAGE_ADA_CHECK_GAP_S", "5")))
    every = float(os.environ.get("SAGE_ADA_SWEEP_S", "300"))

    def sweeping():
        while True:
            time.sleep(every)
            try:
                receiver.sweep()
            except Exception as err:
                log(f"sweep failed: {err.__class__.__name__}: {err}")

    import uvicorn

    threading.Thread(target=sweeping, daemon=True).start()
    host = os.environ.get("SAGE_ADA_WEBHOOK_HOST", "127.0.0.1")
    log(f"receiving Label Studio webhooks at {public}/label-studio (sweep every {every:.0f} s)")
    uvicorn.run(create_app(receiver, secret), host=host, port=port, log_level="warning",
                access_log=False, server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
