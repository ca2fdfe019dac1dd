"""SmoothGrad (Smilkov et al. 2017): the base method's map averaged over noisy copies.

    saliency(x) = 1/S Σ_s  map(x + σ·(max x − min x)·z_s),   z_s ~ N(0, 1)

σ is a fraction of each sample's own value range, as in the paper. The noise z is an
input of the explain model (`smoothgrad_noise`, [S, N, ...] like x with S in front), not
drawn inside the graph: runtimes' RandomNormal draw different numbers from one seed, and
a map that depends on the runtime is not reproducible. `smoothgrad_noise()` draws it
from a seed with numpy; S is read from its shape, so one model serves any sample count.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .batched import Batch, Context, build_batched_model, flatten_copies, per_sample, reduce
from .builder import Builder
from .errors import RewriteError
from .methods import Method, Rectifiers
from .shapes import InputShapes
from .targets import Target

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
    method: Method = "vanilla",
    sigma: float = DEFAULT_SIGMA,
    input_name: str | None = None,
    output_name: str | None = None,
    rectifiers: Rectifiers = "all",
    target: Target = "portable",
    input_shapes: InputShapes | None = None,
) -> onnx.ModelProto:
    """The explain model of SmoothGrad over `method`: inputs as the model's, plus
    `output_grad` and `smoothgrad_noise`; outputs as the model's, plus `saliency`."""
    if not np.isfinite(sigma) or sigma < 0:
        raise RewriteError(f"SmoothGrad's sigma must be a finite number >= 0, not {sigma}")

    def prelude(g: Builder, x: str) -> Batch:
        info = g.tensor(x)
        shape = None if info.shape is None else [None, *info.shape]
        noise = helper.make_tensor_value_info(NOISE_INPUT, info.elem_type, shape)
        flat = g.Flatten(x, axis=1)
        spread = g.Sub(reduce(g, "ReduceMax", flat, [1]), reduce(g, "ReduceMin", flat, [1]))
        scale = per_sample(g, x, g.Mul(spread, g.scalar_like(sigma, x)))
        noisy = g.Add(g.Unsqueeze(x, g.ints([0])), g.Mul(NOISE_INPUT, scale))
        copies = g.Slice(g.Shape(NOISE_INPUT), g.ints([0]), g.ints([1]))
        return Batch(flatten_copies(g, noisy, x), copies, [noise])

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
