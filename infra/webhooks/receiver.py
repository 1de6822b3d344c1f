"""Resumes suspended runs when annotators finish a round: Label Studio webhooks → Prefect.

A run deployed with ``label_studio.wait: suspend`` registers a webhook on its Label Studio
project whose URL names its flow run and round (``/label-studio?flow_run=…&project=…&round=…``,
plus ``deadline`` when its wait times out). On each annotation event this receiver answers at
once (Label Studio waits only a second), then checks the round in the background (events of
one round are merged: while its check runs, more events ask for one more check after it, not
one each; a check reads only that round's tasks) and resumes
the flow run when every task has its answers (``round_status``: the run's own definition of
answered, labels outside the class list and annotations without a class not counted; the
latter are asked again, as the run asks: ``ask_again``) or the deadline has passed. Every
``SAGE_ADA_SWEEP_S`` seconds it also checks every webhook that points here (a missed or failed
call, a deadline), and removes the webhooks of runs that ended. It keeps no state of its own:
the webhooks are the list of waiting runs.

Settings (environment): PREFECT_API_URL; LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or the
credentials file of infra/label-studio/server.sh); SAGE_ADA_WEBHOOK_HOST (127.0.0.1; 0.0.0.0 in
a container) and SAGE_ADA_WEBHOOK_PORT (8092);
SAGE_ADA_WEBHOOK_URL (this receiver as Label Studio reaches it, default
http://127.0.0.1:<port>); SAGE_ADA_SWEEP_S (300); SAGE_ADA_CHECK_GAP_S (5: the least time
between two checks of one round while its events keep coming).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from components.oracle.base import wait_over  # noqa: E402
from components.oracle.label_studio import (  # noqa: E402
    ask_again, classes_digest, connect, outside_class_list, read_api_key, round_status,
    without_a_class)


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", flush=True)


class Receiver:
    def __init__(self, client, public_url: str, gap_s: float = 0.0):
        self.client, self.public_url = client, public_url.rstrip("/")
        self.gap_s = gap_s                # the least time between two checks of one round
        self._lock = threading.Lock()  # one check at a time: events come in bursts
        self._queue = threading.Lock()
        self._busy: set[tuple] = set()    # rounds being checked
        self._again: dict[tuple, tuple] = {}   # ... with events since their check began: the
                                               # newest event's (query, reason)
        self.checks = 0                   # checks made (for the log and the tests)

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
        from prefect.exceptions import ObjectNotFound
        from prefect.flow_runs import NotPausedError, resume_flow_run

        flow_run, round_ = query["flow_run"], int(query["round"])
        deadline = float(query["deadline"]) if query.get("deadline") else None
        with self._lock:
            self.checks += 1
            why = "timed out" if wait_over(deadline) else None
            if why is None:
                status = round_status(self.client, int(query["project"]), round_,
                                      per_task=int(query.get("per_task") or 0) or None)
                if query.get("classes") and query["classes"] != classes_digest(status.classes):
                    why = "has another class list in Label Studio than the run"
                elif status.answered:
                    why = "answered"
                else:
                    asked = ask_again(self.client, int(query["project"]), status.empty)
                    if asked:
                        log(f"flow run {flow_run}, round {round_}: {without_a_class(asked)}")
                    if status.rejected:
                        log(f"flow run {flow_run}, round {round_}: {status.n_answered} of "
                            f"{status.n_tasks} tasks answered; " + outside_class_list(
                                [(f"item {r['item']} (task {r['task']}, annotation "
                                  f"{r['annotation']})", r["label"]) for r in status.rejected],
                                status.classes))
                    return "waiting"
            try:
                resume_flow_run(flow_run)
            except NotPausedError:
                return "not suspended"
            except ObjectNotFound:
                return "no such flow run"
            log(f"resumed flow run {flow_run}: round {round_} {why} ({reason})")
            return "resumed"

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
            if outcome in ("not suspended", "no such flow run"):
                with get_client(sync_client=True) as prefect:
                    try:
                        ended = prefect.read_flow_run(query["flow_run"]).state.is_final()
                    except Exception:
                        ended = outcome == "no such flow run"
                if ended:
                    self.client.webhooks.delete(id=hook.id)
                    log(f"removed the webhook of ended flow run {query['flow_run']}")


def handler_for(receiver: Receiver):
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if urlparse(self.path).path == "/health":
                return self._reply(200, {"status": "ok"})
            self._reply(404, {"error": "not found"})

        def do_POST(self):
            url = urlparse(self.path)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path != "/label-studio" or not {"flow_run", "project", "round"} <= set(query):
                return self._reply(400, {"error": "expected /label-studio?flow_run=&project=&round="})
            self._reply(202, {"status": "checking"})
            receiver.enqueue(query, "webhook")

        def log_message(self, format, *args):  # quiet: one line per resume instead
            pass

    return Handler


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
    receiver = Receiver(client, public, gap_s=float(os.environ.get("SAGE_ADA_CHECK_GAP_S", "5")))
    every = float(os.environ.get("SAGE_ADA_SWEEP_S", "300"))

    def sweeping():
        while True:
            time.sleep(every)
            try:
                receiver.sweep()
            except Exception as err:
                log(f"sweep failed: {err.__class__.__name__}: {err}")

    threading.Thread(target=sweeping, daemon=True).start()
    host = os.environ.get("SAGE_ADA_WEBHOOK_HOST", "127.0.0.1")
    server = ThreadingHTTPServer((host, port), handler_for(receiver))
    log(f"receiving Label Studio webhooks at {public}/label-studio (sweep every {every:.0f} s)")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
