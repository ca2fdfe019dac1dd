"""Guided Grad-CAM (Selvaraju et al. 2017): guided backprop × the upsampled Grad-CAM map.

Two walks in one graph, both seeded by the same output gradient: the true gradient to the
layer (Grad-CAM's weights) and the guided one to the input. The one-channel map multiplies
every input channel, as Captum's GuidedGradCam and pytorch-grad-cam's `cam * gb` do; the
`cam_style` of the map is Grad-CAM's (gradcam.py): "captum" is GuidedGradCam exactly,
"pytorch-grad-cam" is their normalised, bilinear map times their guided backprop.
"""

from __future__ import annotations

from . import gradcam, guided
from .base import Context, MethodSpec


def build(ctx: Context) -> str:
    return ctx.g.Mul(ctx.gradient(guided.rectifier_rule), gradcam.upsampled_map(ctx))


METHOD = MethodSpec(
    name="guided_gradcam",
    summary="guided backpropagation times the upsampled Grad-CAM map",
    build=build,
    params=(gradcam.LAYER, gradcam.STYLE),
    merges=True,
)
