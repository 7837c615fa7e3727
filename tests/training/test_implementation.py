"""`model.net.implementation=auto` picks the implementation measured fastest on the device,
and bf16 autocast trains to the same metrics as float32 within noise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from ser.models.fast import FastTimeFrequencyFusion
from ser.models.reference import TimeFrequencyFusion
from ser.settings import ConfigError
from ser.tracking import results
from ser.training import implementation
from ser.training.build import build_module
from ser.training.engine import train
from tests.helpers.config import one_torch_thread, typed
from tests.helpers.fakes import prepared_datamodule as datamodule


@pytest.mark.parametrize(
    ("requested", "device", "precision", "chosen"),
    [
        ("auto", "cpu", "32-true", "fast"),
        ("auto", "cuda", "32-true", implementation.FASTEST_ON_DEVICE["cuda"]),
        ("auto", "mps", "32-true", "reference"),  # not measured: the plain computation
        ("auto", "cpu", "bf16-mixed", "reference"),  # fast is float32 only
        ("auto", "cuda", "bf16-mixed", "reference"),
        ("reference", "cpu", "32-true", "reference"),
        ("fast", "cuda", "32-true", "fast"),  # an explicit choice is kept
    ],
)
def test_resolution(requested: str, device: str, precision: str, chosen: str) -> None:
    assert implementation.resolve_implementation(requested, device, precision) == chosen


def test_fast_under_mixed_precision_and_unknown_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="implementation=fast computes in float32 only, but trainer.precision=bf16-mixed"):
        implementation.resolve_implementation("fast", "cuda", "bf16-mixed")
    with pytest.raises(ConfigError, match="implementation=turbo: expected auto, reference or fast"):
        implementation.resolve_implementation("turbo", "cpu")


def test_device_of_the_accelerator_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert implementation.device_type("cpu") == "cpu"
    assert implementation.device_type("gpu") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert implementation.device_type("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert implementation.device_type("auto") == "cpu"


def test_the_default_is_auto_and_builds_per_device(tiny_config) -> None:
    """The default config asks for `auto`; a CPU run builds the fast fusion block, a GPU run
    the reference one, and the checkpoint records what was built."""
    cfg = tiny_config()
    assert cfg.model.net.implementation == "auto"
    on_cpu = build_module(typed(tiny_config("trainer.accelerator=cpu")), datamodule())
    assert type(on_cpu.net.forward_stream.fusion) is FastTimeFrequencyFusion
    assert on_cpu.metadata["net"]["implementation"] == "fast"
    on_gpu = build_module(typed(tiny_config("trainer.accelerator=gpu")), datamodule())
    expected = implementation.FASTEST_ON_DEVICE["cuda"]
    assert on_gpu.metadata["net"]["implementation"] == expected
    fusion_type = FastTimeFrequencyFusion if expected == "fast" else TimeFrequencyFusion
    assert type(on_gpu.net.forward_stream.fusion) is fusion_type
    # Both have the same parameters: a state dict moves between them.
    on_gpu.net.load_state_dict(on_cpu.net.state_dict())


def run_record(cfg) -> dict:
    """Train `cfg` and return its results.json."""
    with one_torch_thread():
        train(cfg)
    return results.read_json(Path(cfg.paths.output_dir) / results.RESULTS_FILE)


def test_the_record_names_the_implementation_that_ran(tiny_config) -> None:
    assert run_record(tiny_config("trainer.accelerator=cpu"))["implementation"] == "fast"


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_tiny_run_trains_on_the_gpu(tiny_config, precision: str) -> None:
    record = run_record(tiny_config("trainer.accelerator=gpu", f"trainer.precision={precision}"))
    assert record["implementation"] == implementation.resolve_implementation("auto", "cuda", precision)
    assert [fold["num_test"] for fold in record["folds"]] == [14, 14]
    assert all(0.0 <= fold["test/uar"] <= 1.0 for fold in record["folds"])


@pytest.mark.slow
def test_bf16_autocast_trains_to_the_float32_metrics_within_noise(tiny_config) -> None:
    """The same tiny data and seeds, float32 against bf16 autocast (Lightning's bf16-mixed;
    CPU autocast here, the same code path as CUDA's): the fold metrics agree within the
    spread that two float32 runs with different training seeds show on the same folds."""

    def fold_uars(name: str, precision: str = "32-true", seed: int = 1234) -> list[float]:
        # Enough optimiser steps for Keras-momentum BatchNorm statistics to settle (batch 4).
        cfg = tiny_config(
            "trainer.accelerator=cpu", "model.net.implementation=reference",
            "trainer.max_epochs=15", "dataset.generator.utterances_per_class_per_speaker=8",
            "dataset.batch_size=4", f"trainer.precision={precision}", f"seed={seed}",
        )
        with open_dict(cfg):
            cfg.paths.output_dir = f"{cfg.paths.output_dir}-{name}"
        record = run_record(cfg)
        assert record["config"]["trainer"]["precision"] == precision
        return [fold["test/uar"] for fold in record["folds"]]

    fp32 = fold_uars("fp32")
    bf16 = fold_uars("bf16", precision="bf16-mixed")
    other_seed = fold_uars("seed", seed=4321)
    noise = max(abs(a - b) for a, b in zip(fp32, other_seed, strict=True))
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    # chance is 1/7; both must have learned something (float32 measured 0.29 and 0.43)
    assert mean(fp32) > 0.25 and mean(bf16) > 0.25, (fp32, bf16)
    assert abs(mean(bf16) - mean(fp32)) <= max(noise, 0.1), (fp32, bf16, other_seed)


def test_compiled_runs_take_the_reference_and_fast_is_refused() -> None:
    assert implementation.resolve_implementation("auto", "cpu", compiled=True) == "reference"
    with pytest.raises(ConfigError, match="implementation=fast cannot be compiled"):
        implementation.resolve_implementation("fast", "cuda", compiled=True)


def test_compile_compiles_the_training_steps_only(tiny_config, monkeypatch: pytest.MonkeyPatch) -> None:
    """`model.compile=MODE`: training batches go through torch.compile(net, mode=MODE);
    evaluation runs the network eagerly; the state dict is the uncompiled one's."""
    calls: list[tuple[str, int]] = []

    def fake_compile(net, mode):  # noqa: ANN001, ANN202
        def compiled(x):  # noqa: ANN001, ANN202
            calls.append((mode, len(x)))
            return net(x)

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    plain = build_module(typed(tiny_config("trainer.accelerator=cpu")), datamodule())
    module = build_module(typed(tiny_config("trainer.accelerator=cpu", "model.compile=reduce-overhead")), datamodule())
    assert module.metadata["net"]["implementation"] == "reference"
    assert set(module.state_dict()) == set(plain.state_dict())
    x, y = torch.randn(3, 20, 39), torch.tensor([0, 1, 2])
    module.train()
    module.training_step((x, y), 0)
    module.eval()
    module.test_step((x, y), 0)
    assert calls == [("reduce-overhead", 3)]  # the training batch, not the test batch


def test_an_unknown_compile_mode_is_a_setting_error(tiny_config) -> None:
    with pytest.raises(ConfigError, match="model.compile=fastest: expected null or one of default, reduce-overhead"):
        implementation.check_implementation(typed(tiny_config("model.compile=fastest")))
