"""The package stays off its libraries' private API, except where a comment says why.

A private name (a leading underscore) of torch, Lightning, Hydra, OmegaConf or W&B can
change in any release. The package names torch's layers by their public classes
(ser/models/reference/layers.py); the few private uses left (torch's multi-tensor
`_foreach_*` ops, `torch._dynamo.maybe_mark_dynamic`, the compile cache's folder rule)
each carry a comment naming them, right above the use.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ser"
LIBRARIES = r"(?:torch|pytorch_lightning|lightning|hydra|omegaconf|wandb)"
# an attribute or module path with a private part: torch._foreach_add_, nn.modules.x._Y,
# `from hydra._internal import ...`, `from torch.nn.modules.batchnorm import _BatchNorm`
PRIVATE_PATH = re.compile(rf"\b(?:{LIBRARIES}|nn)(?:\.\w+)*\._(?!_)\w+")
PRIVATE_IMPORT = re.compile(rf"^from {LIBRARIES}(?:\.\w+)* import (?:.*[,(] )?_[a-z]\w*")
# how far above a private use its explaining comment may be
COMMENT_REACH = 10


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _code_lines(source: str) -> dict[int, str]:
    """Each line's code with comments and string literals (docstrings too) left out."""
    lines: dict[int, list[str]] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.NAME, tokenize.OP, tokenize.NUMBER):
            lines.setdefault(token.start[0], []).append(token.string)
    # `nn . modules . x` (split over tokens) reads as the dotted path it is
    return {number: re.sub(r"\s*\.\s*", ".", " ".join(parts)) for number, parts in lines.items()}


def _private_uses(path: Path) -> list[tuple[int, str]]:
    uses = []
    for number, code in sorted(_code_lines(path.read_text(encoding="utf-8")).items()):
        for match in PRIVATE_PATH.finditer(code):
            uses.append((number, match.group(0)))
        if PRIVATE_IMPORT.match(code):
            uses.append((number, code))
    return uses


def _explained(lines: list[str], number: int, name: str) -> bool:
    """Whether a comment within COMMENT_REACH lines above (or on) the use names the
    library and the private part's first word (e.g. `torch._foreach`, `torch._dynamo`)."""
    parts = re.match(r"(\w+)(?:\.\w+)*?\.(_[A-Za-z]+)", name)
    # e.g. torch._foreach, torch._dynamo, hydra._internal; a private import: its line
    root = f"{parts[1]}.{parts[2]}" if parts else name
    for line in lines[max(0, number - 1 - COMMENT_REACH) : number]:
        comment = line.split("#", 1)[1] if "#" in line else ""
        if root in comment:
            return True
    return False


def test_no_private_layer_classes() -> None:
    """torch's private layer bases (`_BatchNorm`, `_DropoutNd`, ...) appear nowhere."""
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {name}"
        for path in _sources()
        for number, name in _private_uses(path)
        if re.search(r"nn(?:\.modules)?(?:\.\w+)*\._[A-Z]", name)
    ]
    assert not found, "private torch layer classes:\n" + "\n".join(found)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_every_private_use_says_why(path: Path) -> None:
    """Each remaining private name has a comment naming it just above its use."""
    lines = path.read_text(encoding="utf-8").splitlines()
    unexplained = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {name}"
        for number, name in _private_uses(path)
        if not _explained(lines, number, name)
    ]
    assert not unexplained, "private API used without a comment saying why:\n" + "\n".join(unexplained)


def test_the_scan_finds_private_uses(tmp_path: Path) -> None:
    """The scan itself: it flags a private class, a private import and an unexplained
    `torch._` call, and accepts one with its comment."""
    source = tmp_path / "module.py"
    source.write_text(
        "import torch\n"
        "from torch import nn\n"
        "from hydra._internal.utils import thing\n"
        "isinstance(m, nn.modules.batchnorm._BatchNorm)\n"
        "torch._foreach_add_(xs, 1)\n"
        "# torch._foreach_*: no public list-wide update\n"
        "torch._foreach_mul_(xs, 2)\n"
        "text = 'torch._not_code'\n"
        "from torch.utils import _pytree\n"
    )
    uses = _private_uses(source)
    names = [name for _, name in uses]
    assert "nn.modules.batchnorm._BatchNorm" in names
    assert "torch._foreach_add_" in names and "torch._foreach_mul_" in names
    assert any("hydra._internal" in name for name in names)
    assert not any("_not_code" in name for name in names)
    assert any("_pytree" in name for name in names)
    lines = source.read_text().splitlines()
    explained = {name: _explained(lines, number, name) for number, name in uses}
    assert explained["torch._foreach_mul_"] and not explained["torch._foreach_add_"]
