"""The science of one active-adaptation run, step by step, without any orchestration.

``RunSteps`` loads the validated manifest once and exposes the steps of the design card
(pretrain, select, annotate, adapt, evaluate). The Prefect flow calls these steps as tasks;
the benchmark calls them in a plain loop; both get the same numbers for the same seed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from functools import partial
from pathlib import Path

import torch

from components import numerics
from components.adaptation.distributed import Shard
from components.adaptation.trainer import Streams, seed_everything, train
from components.config import Config
from components.data.split import class_list, read_manifest
from components.data.stream import stream_images
from components.data.tensors import ImageSet, load_images
from components.files import exclusive, write_atomic
from components.models import build_network
from components.models.checkpoints import load_checkpoint, save_checkpoint
from components.models.device import resolve_device
from components.models.inference import evaluate, predict
from components.query import PoolOutputs, select as run_query
from components.run.torchrun import launch


def streams_images(data_cfg, n_images: int) -> bool:
    """``data.loader``; ``auto`` streams once the decoded images would pass ``memory_limit_gb``
    (28-px digits: 4 MB in memory; 100k photos at 224 px: 15 GB, so streamed)."""
    if data_cfg.loader != "auto":
        return data_cfg.loader == "stream"
    decoded = n_images * data_cfg.channels * data_cfg.image_size ** 2
    return decoded > data_cfg.memory_limit_gb * 1e9


TRAINING_JOB = "components.run.training_job"  # each torchrun process's entry point (named, not
#                                          imported: it builds the steps itself)

# The code a pretrained model depends on: a change to any of it must not reuse a cached model.
# Prediction and evaluation (models/inference.py) are not in it: they do not change the weights.
TRAINING_CODE = ("adaptation", "models", "data/tensors.py", "data/stream.py", "numerics.py")
NOT_TRAINING_CODE = ("models/inference.py",)
# Settings that pretraining never reads: no target label is known before round 1.
ROUND0_FREE_SETTINGS = ("labelled_in_adversary",)
# Settings that bound how long a phase may take, not what it computes.
NOT_TRAINING_SETTINGS = ("job_timeout_s", "collective_timeout_s")


def training_code_digest(root: Path = Path(__file__).parents[1]) -> str:
    digest = hashlib.sha256()
    for name in TRAINING_CODE:
        path = root / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if str(file.relative_to(root)) in NOT_TRAINING_CODE:
                continue
            digest.update(f"{file.relative_to(root)}\n".encode() + file.read_bytes())
    return digest.hexdigest()


class RunSteps:
    def __init__(self, cfg: Config, *, progress: bool = True,
                 cache_dir: str | Path = ".sage-ada/cache", device: torch.device | None = None):
        self.cfg, self.progress = cfg, progress
        self.cache_dir = Path(cache_dir)
        numerics.apply(cfg.train.cpu_kernels, cfg.train.cpu_threads)
        self.device = device or resolve_device(cfg.train.device)
        self.manifest = read_manifest(cfg.data.manifest)
        self.classes = class_list(self.manifest)
        self.streamed = streams_images(cfg.data, len(self.manifest))
        d = cfg.data
        load = (partial(stream_images, crop=d.image_size, resize=d.resize, workers=d.workers)
                if self.streamed else partial(load_images, size=d.image_size))
        load = partial(load, root=d.root, classes=self.classes, channels=d.channels)
        rows = lambda split: self.manifest[self.manifest["split"] == split]  # noqa: E731
        self.source = load(rows("source"))
        # Target-train labels are withheld: only an oracle can reveal them.
        self.pool = load(rows("target_train"), with_labels=False)
        self.test = load(rows("target_test"))

    # ------------------------------------------------------------------ model
    def new_network(self):
        seed_everything(self.cfg.train.seed)
        return build_network(self.cfg, len(self.classes))

    def pretrain_key(self) -> str:
        """Pretraining depends on data, model, training settings and training code only, not
        on the query."""
        cfg = self.cfg
        blob = json.dumps({"data": cfg.data.model_dump(), "split": cfg.split.model_dump(),
                           "model": cfg.model.model_dump(), "classifier": cfg.classifier_kind,
                           "train": cfg.train.model_dump(exclude={"steps_per_round", "device",
                                                                  "regulariser", "lambda_entropy",
                                                                  *ROUND0_FREE_SETTINGS,
                                                                  *NOT_TRAINING_SETTINGS}),
                           "manifest": hashlib.sha256(
                               self.manifest.to_csv(index=False).encode()).hexdigest(),
                           "code": training_code_digest()},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def pretrain(self) -> tuple[torch.nn.Module, float, bool]:
        """UDA pretraining (round 0 model), cached by its inputs; returns (net, seconds, cached)."""
        net = self.new_network()
        path = self.cache_dir / f"pretrain-{self.pretrain_key()}.pt"
        with exclusive(path.with_suffix(".lock")):  # one run fills it; the others then load it
            if path.exists():
                load_checkpoint(net, path)
                return net.to(self.device).eval(), 0.0, True
            start = time.perf_counter()
            self.train_phase(net, 0, {})
            seconds = time.perf_counter() - start
            save_checkpoint(net, path)
        return net, seconds, False

    def load(self, path: str | Path):
        net = self.new_network()
        load_checkpoint(net, path)
        return net.to(self.device).eval()

    # ------------------------------------------------------------------ steps
    def unlabelled(self, labelled: dict[str, str]) -> ImageSet:
        return self.pool.without(labelled)

    def select(self, net, labelled: dict[str, str], round: int) -> tuple[list[str], list[float], float]:
        a = self.cfg.active
        pool = self.unlabelled(labelled)
        start = time.perf_counter()
        ids, scores = run_query(a.strategy, self.pool_outputs(net, pool), min(a.budget, len(pool)),
                                seed=a.seed * 1000 + round, chunk=a.selection_chunk,
                                storage=a.embedding_storage, options=a.strategy_options())
        return ids, scores, time.perf_counter() - start

    def pool_outputs(self, net, pool: ImageSet) -> PoolOutputs:
        """What every strategy reads: the pool's features and probabilities, predicted once,
        the discriminator (in eval mode) and what the classifier's last layer sees."""
        z, logits = predict(net, pool, device=self.device)
        return PoolOutputs.from_logits(pool.ids, z, logits, net.discriminator,
                                       classifier=net.classifier)

    def request_context(self, net, ids: list[str], scores: list[float]) -> dict[str, dict]:
        """What annotators see beside each image: path, query score, the model's guess."""
        data = self.pool.subset(ids)
        _, logits = predict(net, data, device=self.device)
        prob, pred = torch.softmax(logits, 1).max(1)
        paths = dict(zip(self.manifest["sample_id"], self.manifest["path"]))
        return {sid: {"path": paths[sid], "score": float(score),
                      "prediction": self.classes[int(k)], "confidence": float(p)}
                for sid, score, k, p in zip(ids, scores, pred, prob)}

    def labelled_set(self, labelled: dict[str, str]) -> ImageSet:
        data = self.pool.subset(sorted(labelled))
        lookup = {c: i for i, c in enumerate(self.classes)}
        data.labels = torch.tensor([lookup[labelled[s]] for s in data.ids], dtype=torch.long)
        return data

    def known_labels(self, labelled: dict[str, str]) -> torch.Tensor:
        """Per sample of the whole target pool (U_T, what B_T^u is drawn from): its class
        index where it is labelled, else -1."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([lookup[labelled[s]] if s in labelled else -1
                             for s in self.pool.ids], dtype=torch.long)

    def adapt(self, net, labelled: dict[str, str], round: int) -> float:
        """``steps_per_round`` updates of eq. 10 on L_S, L_T so far and the whole U_T."""
        start = time.perf_counter()
        self.train_phase(net, round, labelled)
        return time.perf_counter() - start

    def train_phase(self, net, round: int, labelled: dict[str, str], *,
                    shard: Shard | None = None):
        """Round 0: UDA pretraining (no labels); round N: its adaptation. Trains ``net`` in
        place (and returns it, in eval mode).

        With ``train.gpus > 1`` and no ``shard`` given, the phase runs as a ``torchrun`` job,
        one process per GPU, and the weights come back from its rank 0."""
        t = self.cfg.train
        if shard is None and t.gpus > 1:
            return self._train_distributed(net, round, labelled)
        pretraining = round == 0
        streams = Streams(self.source, self.labelled_set(labelled) if labelled else None,
                          self.pool, self.known_labels(labelled)
                          if labelled and t.labelled_in_adversary == "label" else None)
        train(net, streams, steps=t.pretrain_steps if pretraining else t.steps_per_round,
              train_cfg=t, regulariser="source" if pretraining else t.regulariser,
              seed=t.seed if pretraining else t.seed * 1000 + round, device=self.device,
              phase=f"pretrain ({t.adversarial})" if pretraining else f"adapt round {round}",
              ramp_lambda=pretraining, progress=self.progress, shard=shard or Shard())
        return net

    def _train_distributed(self, net, round: int, labelled: dict[str, str]):
        job = self.cache_dir / "jobs" / f"{os.getpid()}-round-{round}"
        job.mkdir(parents=True, exist_ok=True)
        save_checkpoint(net, job / "start.pt")
        device = "cpu" if self.device.type == "cpu" else "cuda"
        write_atomic(job / "job.json", json.dumps({
            "config": self.cfg.model_dump(), "round": round, "labelled": labelled,
            "device": device, "progress": self.progress}))
        print(f"round {round}: training on {self.cfg.train.gpus} {device} processes "
              f"(torchrun; log: {job / 'log.txt'})", flush=True)
        # Rank 0 trains on the GPU this process uses: this process holds neither the model nor
        # cached memory there meanwhile (the weights come back from end.pt).
        net.to("cpu")
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        try:
            launch(TRAINING_JOB, job, self.cfg.train.gpus, log=job / "log.txt",
                   timeout_s=self.cfg.train.job_timeout_s)
            load_checkpoint(net, job / "end.pt")
        finally:  # a failed job leaves the net as it was, where it was
            net.to(self.device)
        shutil.rmtree(job, ignore_errors=True)
        return net.eval()

    def evaluate(self, net) -> dict:
        return evaluate(net, self.test, self.classes, device=self.device)

    def example_input(self, net):
        """Two normalised test images: the input example MLflow traces the model with."""
        images = next(iter(self.test.subset(self.test.ids[:2]).eval_batches(2)))
        return net.normalise(images).numpy()

    def save(self, net, path: str | Path) -> None:
        save_checkpoint(net, path)
