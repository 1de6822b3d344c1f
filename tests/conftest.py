"""Shared fixtures: the digits benchmark built once per session, tiny configs and projects."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Files side by side (scripts/test.sh): one torch thread each, so two workers do not fight
    # over the cores, and a Prefect home each, so two ephemeral Prefect servers never share
    # one SQLite database.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    os.environ["PREFECT_HOME"] = str(Path.home() / ".cache" / "sage-ada" /
                                     f"prefect-home-{os.environ['PYTEST_XDIST_WORKER']}")


@pytest.fixture(scope="session", autouse=True)
def team_secrets(tmp_path_factory):
    """The servers' secrets for this session (components/secrets.py), in a folder of its own,
    not the user's ~/.config/sage-ada; MLflow clients log in as the admin of the servers that
    infra/mlflow/server.sh starts (it reads the same password), as on a team's machine."""
    from components.secrets import MLFLOW_PASSWORD, ensure_secret, mlflow_login

    os.environ["SAGE_ADA_SECRETS"] = str(tmp_path_factory.mktemp("secrets"))
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING",
                 "SAGE_ADA_WEBHOOK_SECRET", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        os.environ.pop(name, None)
    ensure_secret(MLFLOW_PASSWORD)
    assert mlflow_login()
    yield Path(os.environ["SAGE_ADA_SECRETS"])


def report_probes(name: str, probes: list[dict]) -> None:
    """A security test's probes (what was tried, what it should get, what it got), kept in
    ``$SAGE_ADA_PROBE_REPORT/<name>.json`` when that folder is set
    (benchmarks/security_probe.py gathers them into benchmarks/results/security_probe.json)."""
    import json

    folder = os.environ.get("SAGE_ADA_PROBE_REPORT")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.json").write_text(json.dumps(probes, indent=1))


def fresh_python(code: str, *args: str, env: dict, timeout: float = 300):
    """Run ``code`` in a new Python process at the repository root, with exactly ``env`` (plus
    the repository on PYTHONPATH): what the libraries choose once per process is chosen anew."""
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True,
                          text=True, env={**env, "PYTHONPATH": str(REPO)}, timeout=timeout)


def chromium(shots: Path | None = None, *, network_log: bool = False):
    """Debian's chromium through its chromedriver, headless, with a fresh profile
    (scripts/system-packages.sh installs them; no browser download). ``shots``: a folder made
    for screenshots; ``network_log``: keep what the page asked the network (Chrome's
    performance log)."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium and chromium-driver are not installed: run scripts/system-packages.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    if network_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.implicitly_wait(0)  # explicit waits only: an implicit one stalls every empty lookup
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    return driver


def logged_in(url: str, email: str, password: str):
    """An httpx session logged in to Label Studio at ``url`` as a person (its login form)."""
    import httpx

    browser = httpx.Client(base_url=url, follow_redirects=False, timeout=60)
    browser.get("/user/login/")
    browser.post("/user/login/", data={"email": email, "password": password,
                                       "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
                 headers={"Referer": url + "/user/login/"})
    return browser


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (closed again before it is returned)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """The MLflow server from infra/ over a store in ``folder``: ``env`` reaches it (and is
    what its script needs); ``start`` and ``stop`` it, as often as a test needs."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "MLFLOW_PORT": str(self.port), "MLFLOW_TRACKING_URI": self.uri,
                    "MLFLOW_STORE": str(folder / "store"),
                    "SAGE_ADA_RUN_DIR": str(folder / "servers")}

    def _script(self, action: str, check: bool = True) -> None:
        subprocess.run(["bash", str(REPO / "infra" / "mlflow" / "server.sh"), action],
                       env=self.env, check=check, capture_output=True, timeout=400)

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop", check=False)


@pytest.fixture
def mlflow_server(tmp_path):
    """Started; stopped after the test."""
    server = MlflowServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory) -> Path:
    from components.data.shipped import build_shipped

    root = tmp_path_factory.mktemp("digits") / "data"
    build_shipped(root)
    return root


@pytest.fixture(scope="session")
def digits_manifest(digits_root):
    from components.data.split import build_manifest

    return build_manifest(digits_root, source="mnist", target="optdigits", seed=0)


def tiny_params(data_root: Path, manifest: Path, **train) -> dict:
    """A configuration that runs the whole loop in seconds."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(root=str(data_root), manifest=str(manifest))
    raw["train"].update(pretrain_steps=30, steps_per_round=10, **train)
    raw["active"].update(rounds=2, budget=5)
    raw["tracking"].update(experiment="tests")
    return raw


@pytest.fixture
def project(tmp_path, digits_root, digits_manifest, monkeypatch) -> Path:
    """A working directory with its own params.yaml, manifest and MLflow store."""
    from components.data.split import write_manifest

    manifest = tmp_path / "splits" / "manifest.csv"
    write_manifest(digits_manifest, manifest)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(digits_root, manifest)))
    shutil.copy(REPO / "data.dvc", tmp_path / "data.dvc")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)  # the process-wide URI wins over the variable: reset it too
    return tmp_path


def tiny_network(num_classes: int = 4, adversarial: str = "tsf", dim: int = 6, seed: int = 0,
                 classifier: str = "linear"):
    """A digits network with a small bottleneck, for the maths tests."""
    from components.config import Config

    cfg = Config().with_overrides({"model.bottleneck_dim": dim, "model.discriminator_hidden": 5,
                                   "train.adversarial": adversarial,
                                   "model.classifier": classifier,
                                   "active.strategy": "random"})
    from components.models import build_network

    torch.manual_seed(seed)
    return build_network(cfg, num_classes).eval()


def random_pool(n: int = 40, seed: int = 0):
    from components.data.tensors import ImageSet

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    return ImageSet([f"t/{i:03d}" for i in range(n)], images, torch.full((n,), -1))


def outputs_of(net, pool, device: str = "cpu"):
    """The pool's outputs as the run hands them to a strategy (features, probabilities and
    the discriminator)."""
    from components.models.inference import predict
    from components.query import PoolOutputs

    z, logits = predict(net, pool, device=torch.device(device))
    return PoolOutputs.from_logits(pool.ids, z, logits, net.discriminator,
                                   classifier=net.classifier)
