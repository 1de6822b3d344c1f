"""Oracles: who answers "what is the label of this target sample?".

One interface, so the simulated oracle (benchmarks, ``dvc repro``) and people in Label Studio
run the same code path: ``request(sample_ids, round) -> handle`` then
``collect(handle, timeout) -> {sample_id: label}``; ``check_labels`` is what any answer must be
before a run keeps it. Where people answer in Label Studio, ``label_studio`` owns asking,
checking (``task_answered``: the one definition of "answered", which the webhook receiver of
infra/webhooks/ imports too) and collecting.
"""
from components.oracle.base import Oracle, OracleError, OracleTimeout, check_labels, wait_over
from components.oracle.simulated import SimulatedOracle

ORACLES = {"simulated": SimulatedOracle}


def make_oracle(cfg, manifest, classes: list[str], *, auto_annotate: bool = False,
                progress: bool = True):
    """The oracle ``cfg.active.oracle`` names; ``auto_annotate`` adds the simulated annotator."""
    if cfg.active.oracle in ORACLES:
        return ORACLES[cfg.active.oracle](manifest)
    from components.oracle.auto_annotator import AutoAnnotator
    from components.oracle.label_studio import LabelStudioOracle, read_api_key

    ls = cfg.label_studio
    oracle = LabelStudioOracle(url=ls.url, api_key=read_api_key(ls.credentials), classes=classes,
                               data_root=cfg.data.root, experiment=cfg.experiment_name,
                               poll_interval_s=ls.poll_interval_s, on_timeout=ls.on_timeout,
                               resolve_rule=ls.resolve, progress=progress, hotkeys=ls.hotkeys,
                               instructions=ls.instructions, show_guess=ls.show_guess,
                               annotators_per_task=ls.annotators_per_task, ties=ls.ties,
                               images=ls.images, media_root=ls.media_root,
                               s3=ls.s3.model_dump(),
                               pixelated=cfg.data.image_size <= ls.pixelated_below)
    if auto_annotate:
        pool = manifest[manifest["split"] == "target_train"]
        oracle.on_poll = AutoAnnotator(oracle.client, dict(zip(pool["sample_id"], pool["label"])),
                                       item_of=oracle.item, per_task=ls.annotators_per_task)
    return oracle


__all__ = ["ORACLES", "Oracle", "OracleError", "OracleTimeout", "SimulatedOracle", "check_labels",
           "make_oracle", "wait_over"]
