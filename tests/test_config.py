"""Configuration is validated once, with messages that name the setting to fix."""
from __future__ import annotations

import pytest
import yaml

from components.config import ConfigError, load_config
from tests.conftest import REPO


def test_shipped_params_load():
    cfg = load_config(REPO / "params.yaml")
    assert cfg.active.strategy == "sage" and cfg.experiment_name == "mnist→optdigits"


@pytest.mark.parametrize("override, message", [
    ({"active.strategy": "magic"}, "unknown strategy"),
    ({"active.strategy": "aada"}, "train.adversarial: dann"),
    ({"train.adversarial": "dann"}, "train.adversarial: tsf"),
    ({"model.classifier": "linear", "train.regulariser": "mme"}, "cosine"),
    ({"active.budget": 0}, "active.budget"),
    ({"data.target": "mnist"}, "same domain"),
    ({"active.nonsense": 1}, "unknown setting"),
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
