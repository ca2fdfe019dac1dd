"""The heatmap renderer (onnxplain.render): sign handling, clipping, sizes, overlay, figures.

Oracles: Captum's own `_normalize_attr` (the scaling behind `visualize_image_attr`) for the
sign handling, pytorch-grad-cam's `show_cam_on_image` (OpenCV's colormap) for the blend,
numpy's percentile for clipping, matplotlib's colormaps for the colours and Pillow for the
grayscale base and decoding.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from captum.attr._utils.visualization import _normalize_attr
from onnxplain.render import (
    HeatmapOptions,
    comparison_figure,
    figure_png,
    render_heatmap,
    row_paths,
    scale_map,
    to_2d,
)
from PIL import Image

RNG = np.random.default_rng(0)
SIGNED = RNG.normal(size=(12, 10))
CAPTUM_SIGN = {
    "all": "all",
    "positive": "positive",
    "negative": "negative",
    "absolute": "absolute_value",
}


@pytest.mark.parametrize("sign", ["all", "positive", "negative", "absolute"])
def test_sign_handling_matches_captum(sign: str) -> None:
    ours = scale_map(SIGNED, sign).values  # type: ignore[arg-type]
    # A vanishing outlier_perc: Captum then scales by the maximum, as we do without a
    # percentile (at exactly 0 its cumulative-sum threshold misses the last element by an ulp).
    theirs = _normalize_attr(SIGNED, CAPTUM_SIGN[sign], outlier_perc=1e-9)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert (ours.min() < 0) == (sign == "all")


def test_percentile_clipping_saturates_exactly_the_values_above_it() -> None:
    scaled = scale_map(SIGNED, "all", percentile=90)
    threshold = np.percentile(np.abs(SIGNED), 90)  # no zeros in SIGNED
    assert scaled.scale == pytest.approx(threshold)
    saturated = np.abs(scaled.values) >= 1.0
    np.testing.assert_array_equal(saturated, np.abs(SIGNED) >= threshold)


def test_percentile_of_a_sparse_map_ignores_its_zeros() -> None:
    sparse = np.zeros((10, 10))
    sparse[3, 4], sparse[5, 5], sparse[0, 0] = 2.0, -1.0, 4.0
    assert scale_map(sparse, "absolute", percentile=50).scale == pytest.approx(2.0)
    assert scale_map(sparse, "positive", percentile=50).scale == pytest.approx(3.0)
    assert scale_map(np.zeros((4, 4)), "all").values.max() == 0.0


def test_channels_are_summed_in_either_layout() -> None:
    chw = RNG.normal(size=(3, 5, 7))
    np.testing.assert_allclose(to_2d(chw, "NCHW"), chw.sum(0))
    np.testing.assert_allclose(to_2d(chw.transpose(1, 2, 0), "NHWC"), chw.sum(0))
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        to_2d(RNG.normal(size=(1, 3, 5, 7)))


def test_diverging_map_is_centred_on_zero() -> None:
    m = np.array([[-2.0, 0.0, 2.0, 1.0]])
    colours = np.asarray(render_heatmap(m, HeatmapOptions(sign="all")), dtype=np.float64) / 255
    cmap = matplotlib.colormaps["RdBu_r"]
    for value, position in ((-2.0, 0.0), (0.0, 0.5), (2.0, 1.0), (1.0, 0.75)):
        column = list(m[0]).index(value)
        np.testing.assert_allclose(colours[0, column], cmap(position)[:3], atol=1 / 255)
    assert colours[0, 2, 0] > colours[0, 2, 2] and colours[0, 0, 2] > colours[0, 0, 0]


def test_overlay_is_upsampled_to_the_image_and_blended_with_the_opacity() -> None:
    photo = Image.fromarray(RNG.integers(0, 256, size=(480, 640, 3), dtype=np.uint8))
    plain = render_heatmap(SIGNED, HeatmapOptions(opacity=1.0), photo)
    assert plain.size == (640, 480)  # the image's size, not the map's 10x12
    only_image = render_heatmap(SIGNED, HeatmapOptions(opacity=0.0), photo)
    gray = np.asarray(photo.convert("L"), dtype=np.float64)
    np.testing.assert_allclose(np.asarray(only_image, np.float64)[..., 1], gray, atol=0.5)
    half = np.asarray(render_heatmap(SIGNED, HeatmapOptions(opacity=0.3), photo), np.float64)
    blend = 0.7 * gray[..., None] + 0.3 * np.asarray(plain, np.float64)
    np.testing.assert_allclose(half, blend, atol=1.0)
    no_overlay = render_heatmap(SIGNED, HeatmapOptions(opacity=0.3, overlay=False), photo)
    assert no_overlay.size == (640, 480)
    np.testing.assert_array_equal(np.asarray(no_overlay), np.asarray(plain))


def test_sizes_small_maps_enlarged_huge_images_capped() -> None:
    assert render_heatmap(SIGNED).size == (10, 12)
    assert render_heatmap(SIGNED, min_side=256).size == (220, 264)  # x22, pixels kept whole
    big = Image.new("L", (5000, 1000))
    assert render_heatmap(SIGNED, image=big).size == (2048, 410)


def test_bad_options_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="sign"):
        HeatmapOptions(sign="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="opacity"):
        HeatmapOptions(opacity=1.5)
    with pytest.raises(ValueError, match="percentile"):
        HeatmapOptions(percentile=0)
    with pytest.raises(ValueError, match="colormap"):
        HeatmapOptions(colormap="rainbowish")


@pytest.mark.parametrize("sign", ["all", "negative"])
def test_figure_has_a_colour_bar_per_map_in_saliency_units(sign: str) -> None:
    photo = Image.new("RGB", (64, 48), "gray")
    fig = comparison_figure(photo, [("a", SIGNED), ("b", 3 * SIGNED)], HeatmapOptions(sign=sign))  # type: ignore[arg-type]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2
    for bar, m in zip(bars, (SIGNED, 3 * SIGNED)):
        low, high = bar.get_ylim()
        if sign == "all":
            assert (low, high) == pytest.approx((-np.abs(m).max(), np.abs(m).max()))
        else:
            assert (low, high) == pytest.approx((m.min(), 0.0))
    png = Image.open(io.BytesIO(figure_png(fig)))
    assert png.format == "PNG" and png.width > 3 * 64


def test_batch_rows_get_one_file_each_named_by_sample_and_class() -> None:
    out = Path("maps/out.png")
    assert row_paths(out, [0], [7]) == [out]
    assert row_paths(out, [0, 1], [3, 7]) == [
        Path("maps/out_0_class3.png"),
        Path("maps/out_1_class7.png"),
    ]
    assert row_paths(out, [0, 0], [7, 1])[1] == Path("maps/out_0_class1.png")


def test_blend_matches_pytorch_grad_cams_show_cam_on_image() -> None:
    import cv2

    from helpers.pytorch_grad_cam_import import pytorch_grad_cam

    show_cam_on_image = pytorch_grad_cam().utils.image.show_cam_on_image
    gray = RNG.uniform(0, 1, size=(12, 10))
    magnitude = np.abs(SIGNED)
    opacity = 0.35
    options = HeatmapOptions(sign="absolute", colormap="viridis", opacity=opacity)
    ours = np.asarray(render_heatmap(magnitude, options, gray), dtype=np.float64)
    theirs = show_cam_on_image(
        np.repeat(np.round(gray * 255)[..., None] / 255, 3, axis=2).astype(np.float32),
        (magnitude / magnitude.max()).astype(np.float32),
        use_rgb=True,
        colormap=cv2.COLORMAP_VIRIDIS,
        image_weight=1 - opacity,
    ).astype(np.float64)
    # show_cam_on_image divides its result by its maximum; so do we, to compare the blends.
    # The two viridis tables are indexed by floor(255 m) and floor(256 m): a step apart.
    np.testing.assert_allclose(ours / ours.max() * 255, theirs, atol=3)  # measured 2.2
