"""SmoothGrad (Smilkov et al. 2017): the base method's map averaged over noisy copies.

    saliency(x) = 1/S Σ_s  map(x + σ·(max x − min x)·z_s),   z_s ~ N(0, 1)

σ is a fraction of each sample's own value range, as in the paper. The noise z is an
input of the explain model (`smoothgrad_noise`, [S, N, ...] like x with S in front), not
drawn inside the graph: runtimes' RandomNormal draw different numbers from one seed, and
a map that depends on the runtime is not reproducible. `smoothgrad_noise()` draws it
from a seed with numpy; S is read from its shape, so one model serves any sample count.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ..builder import Builder
from ..errors import RewriteError
from ..rules.rectifiers import DEFAULT_RECTIFIERS, Rectifiers
from ..shapes import InputShapes
from ..targets import Target
from .base import RUN_TIME, MethodSpec, Output, Param, RunFeeds, Tensor
from .batched import Batch, Context, build_batched_model, flatten_copies, per_sample, reduce

NOISE_INPUT = "smoothgrad_noise"
DEFAULT_SIGMA = 0.15  # the paper's 10-20% of the value range
DEFAULT_SAMPLES = 16


def smoothgrad_noise(
    input_shape: tuple[int, ...], samples: int = DEFAULT_SAMPLES, seed: int = 0
) -> np.ndarray:
    """Standard-normal noise for `smoothgrad_noise`: [samples, *input_shape], float32.

    numpy's PCG64 stream from `seed`, so every runtime and every client gets the same
    numbers for the same seed.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, not {samples}")
    rng = np.random.default_rng(seed)
    return rng.standard_normal((samples, *input_shape), dtype=np.float32)


def build_smoothgrad_model(
    model: onnx.ModelProto,
    method: str = "vanilla",
    sigma: float = DEFAULT_SIGMA,
    input_name: str | None = None,
    output_name: str | None = None,
    rectifiers: Rectifiers = DEFAULT_RECTIFIERS,
    target: Target = "portable",
    input_shapes: InputShapes | None = None,
    seed: int | None = None,
    samples: int = DEFAULT_SAMPLES,
) -> onnx.ModelProto:
    """The explain model of SmoothGrad over `method`: inputs as the model's, plus
    `output_grad` and `smoothgrad_noise`; outputs as the model's, plus `saliency`.

    With a `seed`, the noise is stored in the model instead ([samples, 1, ...], the same
    for every sample of a batch), so it needs no noise input: this needs the input's
    per-sample shape fixed.
    """
    if not np.isfinite(sigma) or sigma < 0:
        raise RewriteError(f"SmoothGrad's sigma must be a finite number >= 0, not {sigma}")
    if samples < 1:
        raise RewriteError(f"SmoothGrad needs at least 1 sample, not {samples}")

    def prelude(g: Builder, x: str) -> Batch:
        info = g.tensor(x)
        inputs = []
        if seed is None:
            shape = None if info.shape is None else [None, *info.shape]
            inputs.append(helper.make_tensor_value_info(NOISE_INPUT, info.elem_type, shape))
            noise = NOISE_INPUT
        else:
            per_sample_shape = info.static_from(1)
            if per_sample_shape is None:
                raise RewriteError(
                    f"SmoothGrad with a stored noise (a seed) needs the shape of {x!r} "
                    f"fixed but for the batch, not {info.shape}; fix it with --input-shape "
                    "or feed the noise as an input (no seed)"
                )
            drawn = smoothgrad_noise((1, *per_sample_shape), samples, seed)
            noise = g.const(drawn.astype(g.dtype_of(x)), hint="noise")
        flat = g.Flatten(x, axis=1)
        spread = g.Sub(reduce(g, "ReduceMax", flat, [1]), reduce(g, "ReduceMin", flat, [1]))
        scale = per_sample(g, x, g.Mul(spread, g.scalar_like(sigma, x)))
        noisy = g.Add(g.Unsqueeze(x, g.ints([0])), g.Mul(noise, scale))
        copies = g.Slice(g.Shape(noise), g.ints([0]), g.ints([1]))
        return Batch(flatten_copies(g, noisy, x), copies, inputs)

    def epilogue(g: Builder, c: Context) -> dict[str, str]:
        total = reduce(g, "ReduceSum", c.grads, [0], keepdims=0)
        count = g.Cast(
            g.Reshape(g.Slice(g.Shape(c.grads), g.ints([0]), g.ints([1])), g.ints([])),
            to=onnx.helper.np_dtype_to_tensor_dtype(g.dtype_of(c.x)),
        )
        return {"saliency": g.Div(total, count)}

    return build_batched_model(
        model,
        method,
        "SmoothGrad",
        prelude,
        epilogue,
        input_name=input_name,
        output_name=output_name,
        rectifiers=rectifiers,
        target=target,
        input_shapes=input_shapes,
    )


# The gradient methods a batch method can average or integrate.
GRADIENTS = ("vanilla", "deconvnet", "guided")
GRADIENT = Param(
    "gradient", str, "vanilla", "the gradient method averaged or integrated", choices=GRADIENTS
)


def _whole_model(
    model: onnx.ModelProto, params: Mapping[str, Any], **options: Any
) -> onnx.ModelProto:
    return build_smoothgrad_model(
        model,
        params["gradient"],
        params["sigma"],
        seed=params["seed"],
        samples=params["samples"],
        **options,
    )


def _check_sigma(sigma: float) -> None:
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"the noise's sigma must be a finite number >= 0, not {sigma}")


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**64:
        raise ValueError(f"a seed is a whole number from 0 to 2**64 - 1, not {seed}")


def _copies(params: Mapping[str, Any]) -> tuple[str, int]:
    noise = params["noise"]
    return ("samples", params["samples"]) if noise is None else ("noise", len(noise))


def _feeds(params: Mapping[str, Any], x: np.ndarray) -> RunFeeds:
    """The noise a run is fed: the caller's, checked against the input, or drawn from the
    seed (a random one when none is given, reported so that the map can be repeated)."""
    noise = params["noise"]
    if noise is not None:
        if noise.ndim != x.ndim + 1 or noise.shape[1:] != x.shape:
            raise ValueError(
                f"noise shape is {list(noise.shape)}; it must be [samples, "
                f"{', '.join(map(str, x.shape))}] for this input"
            )
        if not np.isfinite(noise).all():
            raise ValueError("the noise has non-finite values (NaN or infinity)")
        return RunFeeds({NOISE_INPUT: noise.astype(x.dtype, copy=False)})
    seed = secrets.randbits(63) if params["seed"] is None else params["seed"]
    drawn = smoothgrad_noise(x.shape, params["samples"], seed).astype(x.dtype, copy=False)
    return RunFeeds({NOISE_INPUT: drawn}, reported={"seed": seed})


METHOD = MethodSpec(
    name="smoothgrad",
    summary="SmoothGrad: a gradient method's map averaged over noisy copies of the input",
    build=lambda ctx: "",  # unused: whole_model builds the model
    params=(
        GRADIENT,
        Param(
            "sigma",
            float,
            DEFAULT_SIGMA,
            "noise sd as a fraction of each sample's max - min",
            check=_check_sigma,
        ),
        # The noise is fed at run time: one model serves every seed and sample count. An
        # offline build (`onnxplain convert --seed`) may store the noise of a seed instead.
        Param(
            "seed",
            int,
            None,
            "the noise's seed (numpy default_rng(seed).standard_normal); unset: the service "
            f"draws one and returns it, a converted model takes the noise as {NOISE_INPUT!r}",
            kind=RUN_TIME,
            check=_check_seed,
        ),
        Param("samples", int, DEFAULT_SAMPLES, "noisy copies of each sample", kind=RUN_TIME),
        Param(
            "noise",
            Tensor,
            None,
            "standard-normal noise [samples, *input shape], instead of a seed",
            kind=RUN_TIME,
        ),
    ),
    whole_model=_whole_model,
    outputs=(Output("seed", "the seed the noise was drawn from (the one given, or drawn)", int),),
    feeds=_feeds,
    copies=_copies,
)
