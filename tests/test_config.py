"""Every documented override composes, and each ablation switch builds the intended network."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from ser.models import MSSENet, TIMNet
from tests.helpers.config import compose_config


def build(*overrides: str) -> torch.nn.Module:
    cfg = compose_config(list(overrides))
    return instantiate(cfg.model.net, num_classes=7, input_dim=39)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_default_is_the_paper_mssenet() -> None:
    model = build()
    assert isinstance(model, MSSENet)
    assert count(model) == 148180


def test_timnet_switch() -> None:
    model = build("model=timnet")
    assert isinstance(model, TIMNet)
    assert count(model) == 104496


@pytest.mark.parametrize(
    ("override", "expected_change"),
    [
        ("model/se=off", -2 * 2 * (39 * 39 + 39)),
        # One 3x3 branch: two fewer branch convs (11x1 and 1x9 with BN) per direction, and
        # the pointwise conv reads 2*39 instead of 4*39 features.
        ("model/kernels=square", -2 * ((11 * 39 + 39) + (9 * 39 + 39) + 2 * 2 * 39 + 2 * 39 * 39)),
        ("model/regularizer=avgpool", 0),
        ("model/regularizer=dropout", 0),
        ("model/regularizer=none", 0),
        ("model.net.num_blocks=8", -2 * 2 * (2 * (39 * 39 * 2 + 39) + 2 * 2 * 39) - 2),
    ],
)
def test_each_ablation_switch_changes_the_network(override: str, expected_change: int) -> None:
    assert count(build(override)) - 148180 == expected_change


@pytest.mark.parametrize(
    ("override", "module_type", "present"),
    [
        ("model/regularizer=avgpool", "SamePaddingAveragePool2d", True),
        ("model/regularizer=avgpool", "Dropout2d", False),
        ("model/regularizer=dropout", "Dropout", True),
        ("model/regularizer=dropout", "Dropout2d", False),
        ("model/regularizer=spatial_dropout", "Dropout2d", True),
        ("model/se=off", "SqueezeExcitation", False),
        ("model/se=on", "SqueezeExcitation", True),
    ],
)
def test_regulariser_and_se_modules(override: str, module_type: str, present: bool) -> None:
    kinds = {type(m).__name__ for m in build(override).modules()}
    assert (module_type in kinds) == present


def test_documented_overrides_compose() -> None:
    cfg = compose_config([
        "dataset=emodb", "dataset.root=/somewhere", "model=timnet", "trainer.max_epochs=3",
        "cv.folds=5", "cv.seed=9", "seed=3", "logger=csv",
    ])
    assert cfg.dataset.root == "/somewhere"
    assert cfg.trainer.max_epochs == 3 and cfg.cv.folds == 5 and cfg.cv.seed == 9 and cfg.seed == 3
    assert list(cfg.logger) == ["csv"] and cfg.logger.csv._target_.endswith("CSVLogger")
    assert compose_config(["logger=none"]).logger is None


def test_loggers_compose() -> None:
    # As in lightning-hydra-template: each logger file is one entry, a list selects several.
    both = compose_config(["logger=[wandb,csv]"]).logger
    assert list(both) == ["wandb", "csv"]
    assert both.wandb._target_.endswith("WandbLogger") and both.csv._target_.endswith("CSVLogger")
    assert list(compose_config([]).logger) == ["wandb"]
    assert compose_config([]).logger.wandb.log_model is False  # checkpoint artifacts: opt-in


DATASETS = ("casia", "emodb", "emovo", "iemocap", "ravdess", "savee", "timnet_npy")


@pytest.mark.parametrize(
    ("overrides", "epochs"),
    [
        ((), 25),  # `make train`: the synthetic corpus, ~3 minutes on 2 cores
        (("trainer=gpu",), 25),
        *(((f"dataset={name}",), 200) for name in DATASETS),  # the MS-SENet code's 200
        # The cross-corpus target is a dataset config too; it never sets the epochs.
        (("dataset=emodb", "+dataset@test_dataset=synthetic"), 200),
        (("dataset=synthetic", "+dataset@test_dataset=emodb"), 25),
        (("trainer.max_epochs=3",), 3),
        (("dataset=emodb", "trainer.max_epochs=7"), 7),
        (("debug=fast",), 1),
    ],
)
def test_the_epochs_are_the_trainers_setting(overrides: tuple[str, ...], epochs: int) -> None:
    cfg = compose_config(list(overrides))
    assert cfg.trainer.max_epochs == epochs
    # Nothing in a dataset config is for another group: it is all the DataModule's.
    for group in ("dataset", "test_dataset"):
        assert "max_epochs" not in cfg.get(group, {})


def test_wandb_is_offline_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert compose_config([]).logger.wandb.mode == "offline"
    assert compose_config(["logger.wandb.mode=online"]).logger.wandb.mode == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert compose_config([]).logger.wandb.mode == "disabled"


# -- how many temporal-aware blocks each composition trains ------------------------------
CORPORA = ("casia", "emodb", "emovo", "iemocap", "ravdess", "savee", "synthetic")


def timnet_blocks(corpus: str) -> int:
    """TIM-Net's block count: 8, and 10 on IEMOCAP (docs/reference.md)."""
    return 10 if corpus == "iemocap" else 8


def composed_blocks(*overrides: str) -> tuple[int, str, int]:
    """(model.net.num_blocks, the variant label, the TABs of the network it builds)."""
    cfg = compose_config(list(overrides))
    net = instantiate(cfg.model.net, num_classes=4, input_dim=39)
    return int(cfg.model.net.num_blocks), str(cfg.variant), len(net.forward_stream.blocks)


@pytest.mark.parametrize("corpus", CORPORA)
@pytest.mark.parametrize(
    ("overrides", "model", "expected"),
    [
        (("model=timnet",), "timnet", timnet_blocks),
        (("model=mssenet",), "mssenet", lambda corpus: 10),
        (("model.net.num_blocks=6",), "mssenet", lambda corpus: 6),
        (("model=timnet", "model.net.num_blocks=3"), "timnet", lambda corpus: 3),
        (("model=mssenet", "model.net.num_blocks=4"), "mssenet", lambda corpus: 4),
    ],
)
def test_block_count_per_corpus_and_label(corpus: str, overrides, model: str, expected) -> None:
    blocks, variant, built = composed_blocks(f"dataset={corpus}", *overrides)
    assert blocks == built == expected(corpus)
    assert variant.startswith(f"{model}-") and variant.endswith(f"-tab{blocks}")


@pytest.mark.parametrize("corpus", [c for c in CORPORA if c != "synthetic"])
@pytest.mark.parametrize(
    ("overrides", "model", "expected"),
    [
        ((), "mssenet", lambda corpus: 10),  # the MS-SENet code: 10 for every corpus
        (("model=timnet",), "timnet", timnet_blocks),
        (("model.net.num_blocks=8",), "mssenet", lambda corpus: 8),
        (("model.net.num_blocks=12",), "mssenet", lambda corpus: 12),
        (("model=timnet", "model.net.num_blocks=5"), "timnet", lambda corpus: 5),
    ],
)
def test_paper_experiments_give_each_model_its_own_block_count(corpus: str, overrides, model: str, expected) -> None:
    blocks, variant, built = composed_blocks("experiment=paper", f"dataset={corpus}", *overrides)
    assert blocks == built == expected(corpus)
    assert variant.startswith(f"{model}-") and variant.endswith(f"-tab{blocks}")


@pytest.mark.parametrize("corpus", ["emodb", "iemocap"])
def test_timnet_on_the_authors_feature_files_follows_the_named_corpus(corpus: str) -> None:
    blocks, variant, built = composed_blocks(
        "dataset=timnet_npy", "dataset.path=/x.npy", f"dataset.corpus={corpus}", "model=timnet",
    )
    assert blocks == built == timnet_blocks(corpus) and variant == f"timnet-tab{blocks}"
