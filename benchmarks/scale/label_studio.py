"""Part "label_studio": a project growing to ``rounds`` × ``tasks`` tasks, images inline (as the
project sent them before issue 31) and by reference (now), side by side.

For each way, a Label Studio of its own (``infra/label-studio/server.sh``, SQLite, a fresh data
folder) and one run's project; each round pushes ``tasks`` photos of 224 px (JPEG, cut from
scikit-learn's sample photographs), then measures a poll that reads the whole round (a round's
first poll; the receiver's check), a poll while people label (``LIVE`` tasks labelled since the
one before: five people for ten seconds), the whole-project listing that each poll made before
issue 31 (at a few sizes), and at those sizes two scripted annotators labelling the rest of the
round through the API and one collect. At the
end: the database's size, the media folder's size, and in a real browser (Debian's chromium)
the project's page and one task's page with its image loaded.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from benchmarks.scale import figure

REPO = Path(__file__).resolve().parents[2]
CLASSES = [str(i) for i in range(10)]
# rounds after which the old whole-project listing is timed, and which are labelled and collected
# (2 scripted annotators label a round of 1,000 in minutes on 2 cores; the other rounds' tasks
# stay open, which is what a poll or a listing at that size reads anyway)
MEASURED_AT = (1, 2, 5, 10)
LIVE = 30   # annotations between two polls while people label: five people, 10 s, ~0.6/s each


def photos(folder: Path, n: int, side: int = 224, seed: int = 0) -> list[str]:
    """``n`` distinct photo-like JPEGs (crops of sklearn's sample photographs), made once."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    names = [f"p{i:05d}.jpg" for i in range(n)]
    if all((folder / name).exists() for name in names):
        return names
    rng = random.Random(seed)
    sources = [Image.fromarray(a) for a in load_sample_images().images]
    for name in names:
        src = rng.choice(sources)
        crop = rng.randint(side, min(src.size))
        x, y = rng.randint(0, src.size[0] - crop), rng.randint(0, src.size[1] - crop)
        src.crop((x, y, x + crop, y + crop)).resize((side, side)).save(folder / name, quality=90)
    return names


@contextmanager
def label_studio(folder: Path):
    """A Label Studio of its own, started and stopped with the project's script."""
    from tests.conftest import free_port

    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    media = folder / "media"
    params = folder / "params.yaml"
    params.write_text(f"label_studio:\n  url: http://127.0.0.1:{port}\n  media_root: {media}\n")
    env = {**os.environ, "LABEL_STUDIO_DATA": str(folder), "SAGE_ADA_PARAMS": str(params)}
    script = str(REPO / "infra/label-studio/server.sh")
    subprocess.run(["bash", str(REPO / "infra/label-studio/install.sh")], check=True,
                   capture_output=True)
    subprocess.run(["bash", script, "start"], check=True, env=env, capture_output=True)
    try:
        creds = dict(line.split("=", 1) for line in
                     (folder / "credentials.env").read_text().splitlines())
        yield {"url": f"http://127.0.0.1:{port}", "token": creds["LABEL_STUDIO_USER_TOKEN"],
               "user": creds["LABEL_STUDIO_USERNAME"], "password": creds["LABEL_STUDIO_PASSWORD"],
               "media": media, "db": folder / "db"}
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _annotate(client, project: int, round: int, workers: int = 2, most: int = 0) -> int:
    """Label every task of ``round`` (``most`` of them, where given), as ``workers`` people at
    once through the API."""
    from components.oracle.label_studio import choice_result, round_tasks

    ids = [t.id for t in round_tasks(client, project, round) if not t.annotations]
    ids = ids[:most] if most else ids

    def one(task_id: int) -> None:
        client.annotations.create(id=task_id, result=choice_result(random.choice(CLASSES)),
                                  lead_time=1.0)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, ids))
    return len(ids)


def _in_browser(server: dict, project: int, task: int, shots: Path) -> dict:
    """Seconds until the project's page lists its tasks, and until a task's page shows its
    image, in Debian's chromium (logged in as a person is)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.conftest import chromium

    driver = chromium(shots)
    wait = lambda until, s=120: WebDriverWait(driver, s).until(until)  # noqa: E731
    try:
        driver.get(server["url"] + "/user/login")
        wait(lambda d: d.find_elements(By.NAME, "email"))
        driver.find_element(By.NAME, "email").send_keys(server["user"])
        driver.find_element(By.NAME, "password").send_keys(server["password"] + Keys.ENTER)
        wait(lambda d: "/user/login" not in d.current_url)
        start = time.perf_counter()
        driver.get(f"{server['url']}/projects/{project}/data")
        wait(lambda d: d.find_elements(By.CSS_SELECTOR, "[class*='table__row'], .dm-table__row"))
        page = time.perf_counter() - start
        driver.save_screenshot(str(shots / "project-page.png"))
        start = time.perf_counter()
        driver.get(f"{server['url']}/projects/{project}/data?task={task}")
        wait(lambda d: d.execute_script(   # the task's image (Label Studio loads it as a blob)
            "return [...document.images].some(i => i.src.startsWith('blob:') && i.complete"
            " && i.naturalWidth >= 64)"))
        task_page = time.perf_counter() - start
        driver.save_screenshot(str(shots / "task-page.png"))
    finally:
        driver.quit()
    return {"project_page_s": page, "task_page_s": task_page}


def grow(mode: str, server: dict, data_root: Path, names: list[str], args, shots: Path) -> dict:
    """One project growing round by round, in ``mode`` (inline | reference)."""
    from components.oracle.label_studio import LabelStudioOracle, round_tasks

    oracle = LabelStudioOracle(url=server["url"], api_key=server["token"], classes=CLASSES,
                               data_root=data_root, experiment=f"team-scale-{mode}",
                               poll_interval_s=0.01, on_timeout="fail", progress=False,
                               images=mode, media_root=server["media"])
    oracle.bind(f"scale-{mode}")
    sent = []
    hooks = oracle.client._client_wrapper.httpx_client.httpx_client.event_hooks
    hooks["request"].append(lambda r: sent.append(len(r.content)) if r.url.path.endswith(
        "/import") else None)
    rows = []
    for r in range(1, args.rounds + 1):
        ids = [f"r{r}-{i}" for i in range(args.tasks)]
        context = {sid: {"path": names[i % len(names)], "score": random.random(),
                         "prediction": CLASSES[i % 10], "confidence": 0.5}
                   for i, sid in enumerate(ids)}
        start = time.perf_counter()
        handle = oracle.request(ids, r, context=context)
        push = time.perf_counter() - start
        start = time.perf_counter()
        oracle.poll(handle)                    # the round's first poll reads it whole
        whole = time.perf_counter() - start
        live = []
        for _ in range(4):   # the first reads the import's last seconds too (SETTLE): not kept
            _annotate(oracle.client, handle["project_id"], r, most=LIVE)
            start = time.perf_counter()
            oracle.poll(handle)                # the tasks saved since the last poll
            live.append(time.perf_counter() - start)
        live = live[1:]
        row = {"round": r, "tasks_in_project": r * args.tasks, "push_s": push,
               "import_mb": sent[-1] / 1e6 if sent else 0.0, "poll_whole_round_s": whole,
               "poll_s": statistics.median(live)}
        if r in MEASURED_AT or r == args.rounds:
            start = time.perf_counter()
            every = [t for t in round_tasks(oracle.client, handle["project_id"])
                     if t.data.get("round") == r]   # what a poll read before issue 31
            row["whole_project_listing_s"] = time.perf_counter() - start
            assert len(every) == args.tasks
            start = time.perf_counter()
            _annotate(oracle.client, handle["project_id"], r)
            row["annotate_s"] = time.perf_counter() - start
            start = time.perf_counter()
            labels = oracle.collect(handle, timeout=120)
            row["collect_s"] = time.perf_counter() - start
            assert len(labels) == args.tasks, len(labels)
        row["db_mb"] = _size(server["db"]) / 1e6
        rows.append(row)
        print(f"  {mode} round {r}: " + ", ".join(
            f"{k} {v:.3g}" for k, v in row.items() if k != "round"), flush=True)
    task = next(iter(round_tasks(oracle.client, handle["project_id"], 1))).id
    browser = _in_browser(server, handle["project_id"], task, shots / mode)
    return {"rounds": rows, "media_mb": _size(server["media"]) / 1e6, **browser}


def run(args, work: Path) -> dict:
    data_root = work / "ls-photos"
    names = photos(data_root, args.tasks)
    shots = Path(os.environ.get("SAGE_ADA_SCREENSHOTS", work / "screenshots"))
    measured = {}
    for mode in ("inline", "reference"):
        with tempfile.TemporaryDirectory(dir=work, prefix=f"ls-{mode}-") as tmp:
            with label_studio(Path(tmp)) as server:
                measured[mode] = grow(mode, server, data_root, names, args, shots)
    (work / "label_studio_rounds.json").write_text(json.dumps(measured, indent=1))
    return figures(measured, args)


def figures(measured: dict, args) -> dict:
    """The figures at the largest size, each way; the per-round rows go in ``rounds``."""
    out = {}
    n = args.rounds * args.tasks
    for mode, m in measured.items():
        last, first = m["rounds"][-1], m["rounds"][0]
        targets = mode == "reference"
        out[f"{mode}: push {args.tasks} tasks (round {args.rounds})"] = figure(
            max(r["push_s"] for r in m["rounds"]), "s", at_most=5 if targets else None,
            note="slowest round")
        out[f"{mode}: import size of a round"] = figure(first["import_mb"], "MB")
        out[f"{mode}: one poll at {n} tasks ({LIVE} labelled since the last)"] = figure(
            last["poll_s"], "s", at_most=1 if targets else None)
        out[f"{mode}: a poll reading the whole round at {n} tasks"] = figure(
            last["poll_whole_round_s"], "s", note="a round's first poll, and the receiver's check")
        out[f"{mode}: whole-project listing at {n} tasks (each poll, before)"] = figure(
            last["whole_project_listing_s"], "s")
        out[f"{mode}: one collect at {n} tasks"] = figure(last["collect_s"], "s")
        out[f"{mode}: project page in a browser at {n} tasks"] = figure(
            m["project_page_s"], "s", at_most=3 if targets else None)
        out[f"{mode}: a task's page with its image at {n} tasks"] = figure(m["task_page_s"], "s")
        out[f"{mode}: database at {n} tasks"] = figure(last["db_mb"], "MB")
        if mode == "reference":
            out[f"{mode}: media folder at {n} tasks"] = figure(m["media_mb"], "MB")
    out["per round (both ways)"] = {"value": len(measured["reference"]["rounds"]), "unit": "rounds",
                                    "rows": {k: v["rounds"] for k, v in measured.items()}}
    return out
