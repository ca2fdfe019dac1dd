"""A model's optional config.toml: which tensors to explain, labels, method, preprocessing.

input = "input"             # explained input (default: the first float graph input)
output = "logits"           # explained output (default: the logits behind a Softmax)
labels = "labels.txt"       # one class name per line, relative to the model folder
default_method = "guided"   # vanilla | deconvnet | guided

[preprocessing]             # how an encoded image becomes the input tensor
height = 224
width = 224
mean = [0.485, 0.456, 0.406]  # applied to pixels scaled to [0, 1]
std = [0.229, 0.224, 0.225]
layout = "NCHW"             # or "NHWC"
color_mode = "RGB"          # or "L"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxplain.graph_rewrite import METHODS, Method

from .errors import ConfigError

_LAYOUTS = ("NCHW", "NHWC")
_COLOR_MODES = ("L", "RGB")


@dataclass(frozen=True)
class Preprocessing:
    height: int
    width: int
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    color_mode: str = "RGB"

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "L" else 3


@dataclass(frozen=True)
class ModelConfig:
    input: str | None = None
    output: str | None = None
    labels: tuple[str, ...] = ()
    default_method: Method = "guided"
    preprocessing: Preprocessing | None = None


def load_config(model_dir: Path) -> ModelConfig:
    """The model folder's config.toml, or the defaults where there is none."""
    path = model_dir / "config.toml"
    if not path.exists():
        return ModelConfig()
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config.toml is not valid TOML: {exc}") from None
    method = raw.get("default_method", "guided")
    if method not in METHODS:
        raise ConfigError(f"config.toml: default_method {method!r} is not one of {METHODS}")
    return ModelConfig(
        input=_optional_str(raw, "input"),
        output=_optional_str(raw, "output"),
        labels=_load_labels(model_dir, _optional_str(raw, "labels")),
        default_method=method,
        preprocessing=_preprocessing(raw.get("preprocessing")),
    )


def _optional_str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"config.toml: {key} must be a string")
    return value


def _load_labels(model_dir: Path, name: str | None) -> tuple[str, ...]:
    if name is None:
        return ()
    path = (model_dir / name).resolve()
    # A labels entry may not reach outside the model's own folder.
    if model_dir.resolve() not in path.parents or not path.is_file():
        raise ConfigError(f"config.toml: labels file {name!r} is not a file in the model folder")
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def _preprocessing(raw: Any) -> Preprocessing | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or "height" not in raw or "width" not in raw:
        raise ConfigError("config.toml: [preprocessing] needs height and width")
    pre = Preprocessing(
        height=int(raw["height"]),
        width=int(raw["width"]),
        mean=tuple(float(v) for v in raw.get("mean", (0.0,))),
        std=tuple(float(v) for v in raw.get("std", (1.0,))),
        layout=str(raw.get("layout", "NCHW")),
        color_mode=str(raw.get("color_mode", "RGB")),
    )
    if pre.layout not in _LAYOUTS or pre.color_mode not in _COLOR_MODES:
        raise ConfigError(
            f"config.toml: layout must be one of {_LAYOUTS}, color_mode one of {_COLOR_MODES}"
        )
    if pre.height <= 0 or pre.width <= 0 or any(s == 0 for s in pre.std):
        raise ConfigError("config.toml: height and width must be positive, std non-zero")
    for name, values in (("mean", pre.mean), ("std", pre.std)):
        if len(values) not in (1, pre.channels):
            raise ConfigError(f"config.toml: {name} needs 1 or {pre.channels} values")
    return pre
