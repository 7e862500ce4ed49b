"""Configs written by older versions read as what those runs trained with."""

from __future__ import annotations

import pytest

from trainer.config import CONFIG_VERSION, TrainConfig
from trainer.train.engine import resume_config


def _saved(loss: str, params: dict, version: int | None) -> dict:
    d = TrainConfig().replace(**{"loss.name": loss, "loss.params": params, "loss.miner": "none"}).to_dict()
    if version is None:
        d.pop("version")
    else:
        d["version"] = version
    return d


def test_a_version_1_lifted_structure_run_reads_with_the_distance_scale_it_trained_with():
    old = TrainConfig.from_dict(_saved("lifted_structure", {}, 1))
    assert old.loss.params == {"distance_scale": 1.0}
    assert old.version == CONFIG_VERSION == 2
    # what the user set is kept, and other parameters are untouched
    kept = TrainConfig.from_dict(_saved("lifted_structure", {"neg_margin": 0.5, "distance_scale": 4.0}, 1))
    assert kept.loss.params == {"neg_margin": 0.5, "distance_scale": 4.0}
    # a run written with distance_scale known uses its default; so does a config with no version (the current)
    assert TrainConfig.from_dict(_saved("lifted_structure", {}, 2)).loss.params == {}
    assert TrainConfig.from_dict(_saved("lifted_structure", {}, None)).loss.params == {}
    # generalized lifted structure gained it too; other losses gained nothing
    assert TrainConfig.from_dict(_saved("generalized_lifted_structure", {}, 1)).loss.params == {"distance_scale": 1.0}
    assert TrainConfig.from_dict(_saved("contrastive", {}, 1)).loss.params == {}
    assert TrainConfig.from_dict(_saved("triplet", {"margin": 0.2}, 1)).loss.params == {"margin": 0.2}


def test_resuming_a_version_1_run_keeps_its_loss():
    from trainer.model.losses import build_loss

    cfg = resume_config(_saved("lifted_structure", {}, 1), TrainConfig())
    assert cfg.loss.params["distance_scale"] == 1.0
    loss = build_loss(cfg.loss.name, cfg.loss.params, embedding_dim=8, num_classes=2)
    assert loss.params["distance_scale"] == 1.0


def test_a_newer_version_is_refused_by_name():
    with pytest.raises(ValueError, match="config version 3 is newer"):
        TrainConfig.from_dict(_saved("triplet", {}, 3))
