"""A model's optional config.toml: which tensors to explain, labels, method, preprocessing.

input = "input"             # explained input (default: the first float graph input)
output = "logits"           # explained output (default: the logits behind a Softmax)
labels = "labels.txt"       # one class name per line, relative to the model folder
default_method = "NAME"     # any served method (default: graph_rewrite's DEFAULT_METHOD)

[preprocessing]             # how an encoded image becomes the input tensor
height = 224
width = 224
mean = [0.485, 0.456, 0.406]  # applied to pixels scaled to [0, 1]
std = [0.229, 0.224, 0.225]
layout = "NCHW"             # or "NHWC"
color_mode = "RGB"          # or "L"

[detection]                 # a detector's raw head (detection_config.py says how)
layout = "yolov8"
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from onnxplain.graph_rewrite.methods import DEFAULT_METHOD, Method, method_names

from ..core.errors import ConfigError
from .detection_config import DetectionConfig, detection_config
from .scan import check_inside_repository

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
    default_method: Method = DEFAULT_METHOD
    preprocessing: Preprocessing | None = None
    detection: DetectionConfig | None = None


def load_config(model_dir: Path) -> ModelConfig:
    """The model folder's config.toml, or the defaults where there is none."""
    path = model_dir / "config.toml"
    if not path.exists():
        return ModelConfig()
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config.toml is not valid TOML: {exc}") from None
    _reject_unknown(raw, ModelConfig)
    method = raw.get("default_method", DEFAULT_METHOD)
    # Any served method may be the default; one that cannot build on this model (e.g. a
    # method needing a noise input) fails the model's load, which builds the default.
    if method not in method_names():
        raise ConfigError(
            f"config.toml: default_method {method!r} is not one of {', '.join(method_names())}"
        )
    return ModelConfig(
        input=_optional_str(raw, "input"),
        output=_optional_str(raw, "output"),
        labels=_load_labels(model_dir, _optional_str(raw, "labels")),
        default_method=method,
        preprocessing=_preprocessing(raw.get("preprocessing")),
        detection=detection_config(raw.get("detection")),
    )


def _reject_unknown(raw: dict[str, Any], cls: type, table: str = "") -> None:
    """A typo must not be ignored in silence: name every unknown key, with a suggestion.

    The known keys are the dataclass's fields, so a field added there is accepted here.
    """
    known = [f.name for f in fields(cls)]
    problems = []
    for key, value in raw.items():
        if key in known:
            continue
        kind, name = ("table", f"[{key}]") if isinstance(value, dict) else ("key", key)
        if table:
            name = f"{name} in [{table}]"
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
        problems.append(
            f"unknown {kind} {name}" + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    if problems:
        where = f"[{table}] takes" if table else "known keys and tables:"
        raise ConfigError(f"config.toml: {'; '.join(problems)}; {where} {', '.join(known)}")


def _optional_str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"config.toml: {key} must be a string")
    return value


def _load_labels(model_dir: Path, name: str | None) -> tuple[str, ...]:
    if name is None:
        return ()
    path = model_dir / name
    # The name may not reach outside the model's own folder ("../x"); the file may be a link
    # inside the repository, as every other file of a model (scan.check_inside_repository).
    lexical = Path(os.path.normpath(model_dir.absolute() / name))
    if model_dir.absolute() not in lexical.parents or not path.is_file():
        raise ConfigError(f"config.toml: labels file {name!r} is not a file in the model folder")
    try:
        check_inside_repository(model_dir, path)
    except ConfigError as exc:
        raise ConfigError(f"config.toml: labels file {exc}") from None
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def _preprocessing(raw: Any) -> Preprocessing | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("config.toml: preprocessing must be a table, [preprocessing]")
    _reject_unknown(raw, Preprocessing, "preprocessing")
    if "height" not in raw or "width" not in raw:
        raise ConfigError("config.toml: [preprocessing] needs height and width")
    pre = Preprocessing(
        height=_int(raw, "height"),
        width=_int(raw, "width"),
        mean=_floats(raw, "mean", (0.0,)),
        std=_floats(raw, "std", (1.0,)),
        layout=_choice(raw, "layout", _LAYOUTS, "NCHW"),
        color_mode=_choice(raw, "color_mode", _COLOR_MODES, "RGB"),
    )
    if pre.height <= 0 or pre.width <= 0 or any(s == 0 for s in pre.std):
        raise ConfigError("config.toml: height and width must be positive, std non-zero")
    for name, values in (("mean", pre.mean), ("std", pre.std)):
        if len(values) not in (1, pre.channels):
            raise ConfigError(f"config.toml: {name} needs 1 or {pre.channels} values")
    return pre


def _int(raw: dict[str, Any], key: str) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config.toml: [preprocessing] {key} must be an integer, not {value!r}")
    return value


def _floats(raw: dict[str, Any], key: str, default: tuple[float, ...]) -> tuple[float, ...]:
    value = raw.get(key, default)
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ConfigError(f"config.toml: [preprocessing] {key} must be numbers, not {value!r}")
    return tuple(float(v) for v in values)


def _choice(raw: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = raw.get(key, default)
    if value not in allowed:
        raise ConfigError(f"config.toml: [preprocessing] {key} {value!r} is not one of {allowed}")
    return str(value)
