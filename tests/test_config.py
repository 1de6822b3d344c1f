"""Configuration is validated once, with messages that name the setting to fix."""
from __future__ import annotations

import pytest
import yaml

from components.config import ConfigError, load_config
from tests.conftest import REPO


def test_shipped_params_load():
    cfg = load_config(REPO / "params.yaml")
    assert cfg.active.strategy == "sage" and cfg.experiment_name == "mnist→optdigits"


def test_the_worked_gpu_params_file_is_valid_and_complete():
    """docs/own-images-gpu.params.yaml is read by the same validation, and names every setting
    params.yaml has (a setting added later shows up here, not in a user's run)."""
    worked = load_config(REPO / "docs" / "own-images-gpu.params.yaml")
    assert worked.model.backbone == "resnet50" and worked.data.loader == "stream"
    assert worked.train.device == "cuda:0" and worked.data.resize == 256
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    written = yaml.safe_load((REPO / "docs" / "own-images-gpu.params.yaml").read_text())
    assert {s: sorted(v) for s, v in written.items()} == {s: sorted(v) for s, v in shipped.items()}


@pytest.mark.parametrize("override, message", [
    ({"active.strategy": "magic"}, "active.strategy = 'magic' is not a strategy"),
    ({"active.strategy": "aada"}, "train.adversarial: dann"),
    ({"train.adversarial": "dann"}, "train.adversarial: tsf"),
    ({"train.adversarial": "gan"}, r"train.adversarial = 'gan': not an adversarial loss; choose "
                                   r"one of \['dann', 'none', 'tsf'\]"),
    ({"train.adversarial": "none"}, "strategy 'sage' needs the class-level discriminator"),
    ({"model.classifier": "linear", "train.regulariser": "mme"}, "cosine"),
    ({"active.budget": 0}, "active.budget = 0: Input should be greater than 0"),
    ({"data.target": "mnist"}, "same domain"),
    ({"train.device": "gpu"}, "train.device"),
    ({"data.image_size": 224, "data.resize_size": 200}, "smaller than the crop"),
    ({"active.embedding_storage": "int8"}, "active.embedding_storage"),
    ({"active.nonsense": 1}, "active.nonsense is not a setting"),
    ({"label_studio.wait": "suspend", "label_studio.webhook_url": ""}, "needs label_studio.webhook_url"),
    ({"label_studio.wait": "sleep"}, "label_studio.wait"),
])
def test_bad_settings_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "params.yaml", override)


def test_unknown_key_in_file(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["learning_rate"] = 1
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="train.learning_rate"):
        load_config(tmp_path / "p.yaml")


def test_mme_selects_the_cosine_classifier():
    cfg = load_config(REPO / "params.yaml", {"train.regulariser": "mme"})
    assert cfg.classifier_kind == "cosine"


def test_strategies_are_known_before_torch_loads():
    """Settings name strategies by what components/query registers, read without importing
    it (torch would take seconds); the two lists must be the same."""
    from components.config import declared_strategies
    from components.query import STRATEGIES

    assert declared_strategies() == {name: s.requires for name, s in STRATEGIES.items()}


def test_adversarial_losses_are_known_before_torch_loads():
    """``train.adversarial`` is checked against what components/adaptation registers, read
    without importing it; the two lists must be the same, and every discriminator a strategy
    requires is one some loss trains."""
    from components.adaptation.losses import ADVERSARIAL
    from components.config import declared_adversaries, declared_strategies

    declared = declared_adversaries()
    assert declared == {name: unit.discriminator for name, unit in ADVERSARIAL.items()}
    assert set(declared_strategies().values()) - {None} <= set(declared.values())
    for name in ["none", *declared]:
        assert load_config(REPO / "params.yaml", {"train.adversarial": name,
                                                  "active.strategy": "random"})


def test_one_seed_flag_seeds_training_and_selection_but_not_the_split():
    """Runs with different --seed share neither pretraining nor batch order; the split (the
    data's version) stays put."""
    from flows.cli import _overrides, build_parser

    args = build_parser().parse_args(["run", "--seed", "3"])
    cfg = load_config(REPO / "params.yaml", _overrides(args))
    assert (cfg.active.seed, cfg.train.seed) == (3, 3)
    assert cfg.split.seed == load_config(REPO / "params.yaml").split.seed


def test_the_oracle_has_one_spelling_and_the_old_one_still_parses():
    """``label_studio`` as in params.yaml and the deployment's form; ``label-studio`` (the CLI's
    spelling before issue 35) still means the same."""
    from flows.cli import _overrides, build_parser

    for typed in ("label_studio", "label-studio"):
        args = build_parser().parse_args(["run", "--oracle", typed])
        assert _overrides(args)["active.oracle"] == "label_studio"
    run_help = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "{simulated,label_studio}" in run_help
