"""Typed configuration: ``params.yaml`` is read and validated once, then flows in.

Every knob lives in ``params.yaml``; code reads it through these models only, so a typo
or an impossible combination fails at start-up with a message instead of mid-round.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError,
                      field_validator, model_validator)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    root: str = "data"
    layout: Literal["folders", "lists"] = "folders"
    source: str = "mnist"
    target: str = "optdigits"
    manifest: str = "splits/manifest.csv"
    image_size: int = Field(28, gt=0)       # the network's input: the crop on the streamed path
    channels: Literal[1, 3] = 1
    loader: Literal["auto", "memory", "stream"] = "auto"
    memory_limit_gb: float = Field(2.0, gt=0)  # auto: in memory while the decoded set fits this
    resize_size: Optional[int] = Field(None, gt=0)  # streamed: shorter side before the crop
    workers: int = Field(4, ge=0)            # streamed: decoding processes per stream

    @model_validator(mode="after")
    def _crop_fits(self) -> "DataConfig":
        if self.resize_size is not None and self.resize_size < self.image_size:
            raise ValueError(f"data.resize_size {self.resize_size} is smaller than the crop "
                             f"data.image_size {self.image_size}")
        return self

    @property
    def resize(self) -> int:
        """Shorter side before cropping: as given, else the usual 256 for 224 (8/7 of the crop)."""
        return self.resize_size or round(self.image_size * 8 / 7)


# Seeds feed numpy's and torch's generators, which take 0 … 2³²-1 (numpy refuses negatives):
# checked here, so a bad seed is one line before the run, not a crash after round 0.
Seed = Field(0, ge=0, lt=2**32)


class SplitConfig(_Section):
    seed: int = Seed
    target_test_fraction: float = Field(0.5, gt=0, lt=1)


class ModelConfig(_Section):
    backbone: Literal["digits_cnn", "resnet50"] = "digits_cnn"
    weights: Optional[str] = None
    bottleneck_dim: int = Field(64, gt=0)
    classifier: Literal["auto", "linear", "cosine"] = "auto"
    temperature: float = Field(0.05, gt=0)
    discriminator_hidden: int = Field(128, gt=0)
    batchnorm: Literal["train", "frozen"] = "train"  # frozen: the backbone keeps its statistics


class TrainConfig(_Section):
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")  # auto | cpu | cuda | cuda:N
    cpu_kernels: Literal["native", "portable"] = "native"
    cpu_threads: Optional[int] = Field(None, gt=0)
    seed: int = Seed
    batch_size: int = Field(64, gt=0)
    lr: float = Field(0.01, gt=0)
    lr_schedule: Literal["constant", "anneal"] = "constant"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    adversarial: str = "tsf"  # none, or an adversarial loss registered in components/adaptation
    # how labelled target samples weigh in a class-level adversarial loss (TSF): with the
    # model's prediction ŷ, like every target sample (Algorithm 2), or with their label y
    # (what a label does to the adversarial gradient, the premise of Sage's §3.1; issue 33)
    labelled_in_adversary: Literal["predicted", "label"] = "predicted"
    lambda_adv: float = Field(0.3, ge=0)
    pretrain_steps: int = Field(500, ge=0)
    regulariser: Literal["union", "sum", "mme"] = "sum"
    lambda_entropy: float = Field(0.1, ge=0)
    steps_per_round: int = Field(120, ge=0)
    # torch.compile the update's forward and backward: default (fused kernels) or reduce-overhead
    # (also CUDA graphs: the launch-bound digits update on a GPU 4.2 → 1.9 ms); a minute to start
    compile: Literal["none", "default", "reduce-overhead"] = "none"
    # processes under torchrun (DDP), one per GPU; with device cpu, CPU processes (gloo)
    gpus: int = Field(1, ge=1)
    # gpus > 1: the longest a phase's torchrun job may take (then it is stopped), and the
    # longest a process waits for the others in a collective (one died or hangs)
    job_timeout_s: float = Field(21600, gt=0)
    collective_timeout_s: float = Field(600, gt=0)

    @field_validator("adversarial")
    @classmethod
    def _adversarial_is_registered(cls, name: str) -> str:
        known = sorted(["none", *declared_adversaries()])
        if name not in known:
            raise ValueError(f"not an adversarial loss; choose one of {known} (none: no adversary)")
        return name


class LASConfig(_Section):
    """LADA's local context-aware sampling (``las``); defaults: the authors' (tsun/LADA)."""
    neighbours: int = Field(10, gt=0)             # k of the k-nearest-neighbour graph
    oversample: int = Field(10, ge=0)             # candidates: budget × (1 + oversample)
    propagation_steps: int = Field(1, ge=0)       # passes spreading the score to neighbours
    propagation_weight: float = Field(1.0, ge=0)  # what each pass adds of the neighbours' score


class EADAConfig(_Section):
    """EADA's free-energy selection (``eada``); defaults: the authors' (BIT-DA/EADA)."""
    first_fraction: float = Field(0.5, gt=0, le=1)  # kept by free energy before the margin
    temperature: float = Field(1.0, gt=0)           # β of the free energy


class ActiveConfig(_Section):
    strategy: str = "sage"
    rounds: int = Field(5, ge=0)
    budget: int = Field(10, gt=0)
    seed: int = Seed
    oracle: Literal["simulated", "label_studio"] = "simulated"
    annotate_timeout_s: float = Field(3600, gt=0)
    selection_chunk: int = Field(4096, gt=0)
    embedding_storage: Literal["auto", "float32", "float16"] = "auto"  # Sage's N × C·m embedding
    las: LASConfig = LASConfig()
    eada: EADAConfig = EADAConfig()

    def strategy_options(self) -> dict:
        """The settings of the chosen strategy, where it has a section of its own."""
        section = getattr(self, self.strategy, None)
        return section.model_dump() if isinstance(section, _Section) else {}


class S3Config(_Section):
    """Where ``label_studio.images: s3`` puts the images annotators see (``infra/s3/server.sh``
    runs one such store); Label Studio reads them from there too."""
    endpoint: str = "http://127.0.0.1:8333"  # the S3 API as the run and Label Studio reach it
    bucket: str = "sage-ada"
    # keys written by infra/s3/server.sh; AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY override them
    credentials: str = ".sage-ada/s3/credentials.env"


class LabelStudioConfig(_Section):
    url: str = "http://127.0.0.1:8080"
    credentials: str = ".sage-ada/label-studio/credentials.env"
    poll_interval_s: float = Field(10.0, gt=0)
    on_timeout: Literal["wait", "fail", "partial"] = "fail"
    resolve: Literal["majority", "latest"] = "majority"
    annotators_per_task: int = Field(1, ge=1)  # people who label each task (overlap)
    ties: Literal["ask_another", "latest", "fail"] = "ask_another"  # a majority tie
    hotkeys: dict[str, str] = {}   # class → key; a one-character class name is its own key
    instructions: str = ""         # shown to annotators above each task
    show_guess: bool = True        # pre-fill the model's guess (faster, but it anchors annotators)
    pixelated_below: int = Field(64, ge=0)  # images of data.image_size ≤ this: enlarged without blur
    # how a deployed run waits for a round: block (its process polls) or suspend (the flow run
    # stops, holding nothing, and infra/webhooks/ resumes it when the round is complete)
    wait: Literal["block", "suspend"] = "block"
    webhook_url: str = "http://127.0.0.1:8092"   # the receiver of infra/webhooks/, as Label Studio reaches it
    # how images reach annotators: reference (a file of an opaque name under media_root, served
    # by Label Studio's local-files storage; tasks hold a URL), s3 (an object of an opaque key in
    # the bucket of ``s3``, which Label Studio reads and proxies) or inline (bytes in each task)
    images: Literal["reference", "s3", "inline"] = "reference"
    media_root: str = ".sage-ada/label-studio/media"  # Label Studio's LOCAL_FILES_DOCUMENT_ROOT
    s3: S3Config = S3Config()


class TrackingConfig(_Section):
    experiment: Optional[str] = None
    # one registered model per task: {source} and {target} are filled in
    registered_model: str = "sage-ada-{source}-to-{target}"
    # keep the last k rounds' logged models (and the state checkpoints a tracking server keeps)
    # plus every registered version; None or 0: keep every round (components/tracking/retention)
    keep_round_models: Optional[int] = Field(None, ge=0)

    @model_validator(mode="after")
    def _placeholders(self):
        try:
            self.registered_model.format(source="s", target="t")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"{self.registered_model!r} may only use {{source}} and {{target}} "
                             f"({type(err).__name__}: {err})") from None
        return self


class Config(_Section):
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    active: ActiveConfig = ActiveConfig()
    label_studio: LabelStudioConfig = LabelStudioConfig()
    tracking: TrackingConfig = TrackingConfig()
    # where the settings came from, named by an error (a --params file, a run's saved settings)
    _origin: str = PrivateAttr("params.yaml")

    @model_validator(mode="after")
    def _check_combinations(self) -> "Config":
        """Settings that are wrong together; each message starts with the key to change."""
        strategies = declared_strategies()
        strategy = self.active.strategy
        if strategy not in strategies:
            raise ValueError(f"active.strategy = {strategy!r} is not a strategy; choose one of "
                             f"{sorted(strategies)}")
        need, adversaries = strategies[strategy], declared_adversaries()
        if need is not None and adversaries.get(self.train.adversarial) != need:
            fits = sorted(name for name, trains in adversaries.items() if trains == need)
            fix = (f"set train.adversarial: {' or '.join(fits)} (--adversarial {fits[0]})" if fits
                   else "no adversarial loss in components/adaptation trains it")
            raise ValueError(f"train.adversarial = {self.train.adversarial!r}, but strategy "
                             f"{strategy!r} needs {DISCRIMINATORS.get(need, need)}: {fix}")
        if self.data.source == self.data.target:
            raise ValueError(f"data.target = {self.data.target!r}: data.source and data.target "
                             "name the same domain")
        if self.model.classifier == "linear" and self.train.regulariser == "mme":
            raise ValueError("train.regulariser = 'mme' needs the cosine classifier: "
                             "set model.classifier: cosine (or auto)")
        if self.label_studio.wait == "suspend" and not self.label_studio.webhook_url:
            raise ValueError("label_studio.wait = 'suspend' needs label_studio.webhook_url: the "
                             "receiver that resumes the run (infra/webhooks/server.sh start "
                             "prints it)")
        return self

    @property
    def classifier_kind(self) -> str:
        if self.model.classifier != "auto":
            return self.model.classifier
        return "cosine" if self.train.regulariser == "mme" else "linear"

    @property
    def registered_model_name(self) -> str:
        """``tracking.registered_model`` for this task (models of other tasks are not
        comparable: another target, another test set)."""
        return self.tracking.registered_model.format(source=self.data.source,
                                                     target=self.data.target)

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or f"{self.data.source}→{self.data.target}"

    def with_overrides(self, overrides: dict[str, Any]) -> "Config":
        """Return a new validated config with dotted keys (``active.budget``) replaced
        (``None`` sets a nullable key to null)."""
        raw = self.model_dump()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in raw or key not in raw[section]:
                raise ConfigError(f"{dotted} is not a setting (misspelt?)")
            raw[section][key] = value
        return parse_config(raw, self._origin)


class ConfigError(ValueError):
    """A configuration that cannot run; the message says which setting to fix."""


def parse_config(raw: dict[str, Any], origin: str = "params.yaml") -> Config:
    """``origin`` names where ``raw`` came from in an error: the file, or a run's settings."""
    try:
        cfg = Config.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError("; ".join(_describe(e) for e in err.errors())
                          + f" (in {origin} or the flag that overrides it)") from None
    cfg._origin = origin
    return cfg


def _describe(error: dict) -> str:
    """One validation error as ``key = value: what is allowed``."""
    message = error["msg"].removeprefix("Value error, ")
    key = ".".join(map(str, error["loc"]))
    if not key:  # a check across settings: its message names the key
        return message
    if error["type"] == "extra_forbidden":
        return f"{key} is not a setting (misspelt?)"
    return f"{key} = {error['input']!r}: {message}"


# ``register("name", requires="...")`` and ``@adversarial_loss("name", discriminator="...")``
# as written in components/query and components/adaptation. Read as text, not with ``ast``:
# CPython 3.11's parser is not thread-safe, and a flow run validating its settings while
# another thread parsed failed with "SystemError: AST constructor recursion depth mismatch".
_STRATEGY = re.compile(r'\bregister\(\s*"([^"]+)"(?:\s*,\s*requires\s*=\s*"([^"]*)")?')
_ADVERSARY = re.compile(r'\badversarial_loss\(\s*"([^"]+)"\s*,\s*discriminator\s*=\s*"([^"]*)"')


def declared_strategies() -> dict[str, Optional[str]]:
    """Query strategies by name → what they need ("class", "domain" or None), read from the
    ``register("name", requires=...)`` calls in ``components/query`` without importing them:
    settings are checked before torch loads. A test keeps this equal to the live registry."""
    found: dict[str, Optional[str]] = {}
    for path in sorted((Path(__file__).parent / "query").glob("*.py")):
        for name, needs in _STRATEGY.findall(path.read_text()):
            found[name] = needs or None
    return found


# What a query strategy's ``requires`` names, as an adversarial loss's ``discriminator`` does.
DISCRIMINATORS = {"class": "the class-level discriminator",
                  "domain": "the DANN domain discriminator"}


def declared_adversaries() -> dict[str, str]:
    """Adversarial losses by name → the discriminator they train ("domain" or "class"), read
    from the ``@adversarial_loss("name", discriminator=...)`` registrations in
    ``components/adaptation`` without importing them, as :func:`declared_strategies` does.
    A test keeps this equal to the live registry (``losses.ADVERSARIAL``)."""
    found: dict[str, str] = {}
    for path in sorted((Path(__file__).parent / "adaptation").rglob("*.py")):
        found.update(_ADVERSARY.findall(path.read_text()))
    return found


def load_config(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Config:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the repository root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"{path} is not valid YAML{at} ({getattr(err, 'problem', None) or err})"
                          "; fix it there (params.yaml in git shows the expected form)") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path} holds a {type(raw).__name__}, not settings: it must be "
                          "sections (data:, train:, active:, ...) as in the project's params.yaml")
    cfg = parse_config(raw, str(path))
    return cfg.with_overrides(overrides) if overrides else cfg
