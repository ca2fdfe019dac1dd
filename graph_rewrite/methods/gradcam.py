"""Grad-CAM (Selvaraju et al. 2017) at a layer A of shape [N, C, spatial...] (3-D to 5-D).

    weights  w_c = mean over space of dY/dA_c     (the walk of walk.py, stopped at A)
    map      ReLU(Σ_c w_c·A_c), one channel: [N, 1, spatial of A]
    output   that map brought to the input's spatial size: saliency [N, 1, spatial of X]

Two conventions for the last step (`cam_style`), the two users meet:

    "captum"            Captum's LayerGradCam(relu_attributions=True) then
                        LayerAttribution.interpolate(mode="nearest"): PyTorch's nearest,
                        source index floor(dst·in/out) (ONNX Resize asymmetric/floor);
                        no normalisation, so maps of two images compare in scale.
    "pytorch-grad-cam"  pytorch-grad-cam 1.5.7's GradCAM: each map min-max normalised to
                        [0, 1] (x - min, then / (1e-7 + max)), resized bilinearly with
                        half-pixel centres and edge clamping as cv2.resize does (ONNX Resize
                        linear/half_pixel), then min-max normalised again, as its
                        aggregate_multi_layers does. For 5-D layers pytorch-grad-cam uses
                        scipy's cubic-spline zoom instead; here it stays linear.

A 3-D token layer [N, tokens, C] of a ViT-style model explained against a 4-D image is read
as a grid [N, C, gh, gw] (token_grid.py), the leading class/distillation tokens dropped.
A 4-D layer whose shape reads as [N, H, W, C] (Swin-style stages; token_grid.is_channels_last)
is taken channels last.

Default layer: the last spatial tensor before global pooling or flattening (layers.py).
"""

from __future__ import annotations

from ..builder import Builder
from ..errors import RewriteError
from ..rules.common import onnx_type
from .base import Context, MethodSpec, Param, Shape, spatial_axes
from .token_grid import grid_of_layer, is_channels_last, tokens_as_grid

STYLES = ("captum", "pytorch-grad-cam")

LAYER = Param(
    "layer",
    str,
    None,
    "tensor whose channels are weighted (default: the last spatial one before global "
    "pooling or flattening)",
)
STYLE = Param(
    "cam_style",
    str,
    "captum",
    "captum: nearest upsampling, unnormalised; pytorch-grad-cam: min-max, bilinear resize",
    choices=STYLES,
)


def layer_map(ctx: Context) -> str:
    """ReLU(Σ_c w_c·A_c) at the layer's own resolution: [N, 1, spatial of A]."""
    g, layer = ctx.g, ctx.layer()
    spatial_axes(g.tensor(layer).rank, f"the Grad-CAM layer {layer!r}")
    grad = ctx.gradient(at=layer)
    grid = grid_of_layer(g, layer, ctx.ends.input)
    if grid is not None:
        # A token layer: activation and gradient both read as [N, C, gh, gw], as
        # pytorch-grad-cam's reshape_transform does to both.
        layer, grad = (tokens_as_grid(g, t, *grid) for t in (layer, grad))
    elif is_channels_last(g, layer, ctx.ends.input):
        # [N, H, W, C] (a Swin stage): channels first, so that the weighting below reads C.
        layer, grad = (g.Transpose(t, perm=[0, 3, 1, 2]) for t in (layer, grad))
    # The spatial mean of the gradient; GlobalAveragePool takes 3-D to 5-D alike.
    weights = g.GlobalAveragePool(grad)
    return g.Relu(g.ReduceSum(g.Mul(weights, layer), g.ints([1]), keepdims=1))


def upsampled_map(ctx: Context) -> str:
    """The layer map at the input's spatial size, in the chosen style: [N, 1, spatial of X]."""
    g, x, layer = ctx.g, ctx.ends.input, ctx.layer()
    layer_rank = len(spatial_axes(g.tensor(layer).rank, f"the Grad-CAM layer {layer!r}")) + 2
    if grid_of_layer(g, layer, x) is not None:
        layer_rank = 4  # a token layer read as a grid
    input_rank = len(spatial_axes(g.tensor(x).rank, f"the explained input {x!r}")) + 2
    if input_rank != layer_rank:
        raise RewriteError(
            f"the Grad-CAM layer {layer!r} is {layer_rank}-D but the input {x!r} is "
            f"{input_rank}-D: the map cannot be brought to the input's size"
        )
    cam = layer_map(ctx)
    if g.dtype_of(layer) != g.dtype_of(x):
        # A float16 model with float32 I/O (keep_io_types): the map is declared, and
        # Guided Grad-CAM multiplies it, in the input's type. Cast before resizing, so that
        # the resize and the min-max run in the wider type.
        cam = g.Cast(cam, to=onnx_type(g, x))
    shape = g.shape_of(x)
    sizes = g.Concat(
        g.Slice(shape, g.ints([0]), g.ints([1])),
        g.ints([1]),
        g.Slice(shape, g.ints([2]), g.ints([input_rank])),
        axis=0,
    )
    if ctx.params["cam_style"] == "captum":
        return g.Resize(
            cam,
            "",
            "",
            sizes,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
    resized = g.Resize(
        _min_max(g, cam, x),
        "",
        "",
        sizes,
        mode="linear",
        coordinate_transformation_mode="half_pixel",
    )
    return _min_max(g, resized, x)


def _min_max(g: Builder, cam: str, like: str) -> str:
    """Per image: cam - min, then / (1e-7 + max), as pytorch-grad-cam's scale_cam_image.
    `cam` has the float type of the forward tensor `like` (a built tensor has no type
    the builder can read)."""
    # The map has one channel, so the global pools are per-image minimum and maximum.
    shifted = g.Add(cam, g.GlobalMaxPool(g.Neg(cam)))
    return g.Div(shifted, g.Add(g.GlobalMaxPool(shifted), g.scalar_like(1e-7, like)))


def one_channel(input_shape: Shape) -> Shape:
    if input_shape is None:
        return None
    return (input_shape[0], 1, *input_shape[2:])


METHOD = MethodSpec(
    name="gradcam",
    summary="Grad-CAM: a layer's channels weighted by their mean gradient, upsampled",
    build=upsampled_map,
    params=(LAYER, STYLE),
    saliency_shape=one_channel,
    merges=True,
)
