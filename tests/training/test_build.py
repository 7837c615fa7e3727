"""The objects of a run come from its config: the LightningModule is `model` instantiated."""

from __future__ import annotations

import io

import pytest
import torch

from ser.training.build import build_module
from ser.training.module import EmotionClassifier
from tests.helpers.config import typed
from tests.helpers.fakes import CLASSES
from tests.helpers.fakes import prepared_datamodule as datamodule


@pytest.mark.parametrize(("model", "network"), [("mssenet", "MSSENet"), ("timnet", "TIMNet")])
def test_the_lightning_module_is_the_model_config_instantiated(tiny_config, model: str, network: str) -> None:
    cfg = tiny_config(
        f"model={model}", "model.net.num_blocks=3", "model.optimizer.lr=0.005",
        "model.label_smoothing=0.2",
    )
    assert cfg.model._target_ == "ser.training.module.EmotionClassifier"
    assert cfg.model.net._target_ == f"ser.models.{network}"
    assert cfg.model.optimizer._partial_ is True
    module = build_module(typed(cfg), datamodule(input_dim=20))
    assert type(module) is EmotionClassifier
    assert type(module.net).__name__ == network
    assert len(module.net.forward_stream.blocks) == 3 and module.net.input_dim == 20
    assert module.net.classifier.out_features == len(CLASSES) and module.class_names == CLASSES
    assert module.train_loss.label_smoothing == 0.2
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.005 and tuple(group["betas"]) == (0.93, 0.98) and group["fused"] is True
    # The checkpoint's network description: the registry's name and plain arguments.
    described = module.metadata["net"]
    assert described["name"] == model and described["num_blocks"] == 3
    assert described["num_classes"] == len(CLASSES) and described["input_dim"] == 20


def test_what_the_module_saves_is_plain_data(tiny_config) -> None:
    """Hyper-parameters and metadata go into every checkpoint, which is read back with
    weights_only=True: no OmegaConf container may reach them through instantiate."""
    module = build_module(typed(tiny_config()), datamodule())
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": dict(module.hparams), "metadata": module.metadata}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["hyper_parameters"]["class_names"] == CLASSES
    assert loaded["metadata"]["corpus"] == "synthetic"
