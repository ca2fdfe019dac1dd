"""SmoothGrad and Integrated Gradients explain models against Captum on the same weights.

Batch of two samples explaining different classes; the bound is the issue's,
max|ours − theirs| ≤ 1e-4·max|theirs|. SmoothGrad's noise is ours, fed to the explain
model and handed to Captum's NoiseTunnel in place of its own draw.
"""

from __future__ import annotations

import io
import itertools
import warnings
from collections.abc import Iterator

import numpy as np
import onnx
import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop, IntegratedGradients, NoiseTunnel, Saliency
from onnxplain.graph_rewrite import RewriteError, default_output
from onnxplain.graph_rewrite.methods.batched import GRADIENT_METHODS
from onnxplain.graph_rewrite.methods.integrated_gradients import (
    Baseline,
    build_integrated_gradients_model,
    gaussian_kernel,
)
from onnxplain.graph_rewrite.methods.smoothgrad import (
    GRADIENT,
    build_smoothgrad_model,
    smoothgrad_noise,
)
from scipy import ndimage
from torch import nn

from helpers import runtimes
from helpers.fd import session
from helpers.nets import ResNetStyle, VGGStyle, export_onnx, randomise_batchnorm

TARGETS = [3, 7]
CLASSES = 10
SIDE = 32
RELATIVE_BOUND = 1e-4


class Case:
    def __init__(self, net: nn.Module) -> None:
        generator = torch.Generator().manual_seed(99)
        randomise_batchnorm(net, generator)
        self.net = net.eval()
        self.image = torch.randn(2, 3, SIDE, SIDE, generator=generator)
        self.model = export_onnx(self.net, self.image)
        self.one_hot = np.eye(CLASSES, dtype=np.float32)[TARGETS]

    def feeds(self, **extra: np.ndarray) -> dict[str, np.ndarray]:
        return {"image": self.image.numpy(), "output_grad": self.one_hot, **extra}


@pytest.fixture(scope="module", params=["vgg_style", "resnet_style"])
def case(request: pytest.FixtureRequest) -> Case:
    torch.manual_seed(5)
    return Case(VGGStyle(CLASSES, SIDE) if request.param == "vgg_style" else ResNetStyle(CLASSES))


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    error = float(np.abs(got - want).max())
    assert error <= RELATIVE_BOUND * float(np.abs(want).max()), error


# ---------------------------------------------------------------- SmoothGrad


@pytest.fixture
def captum_noise(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[torch.Tensor]]:
    """Makes NoiseTunnel add the tensor pushed here instead of drawing its own."""
    given: list[torch.Tensor] = []

    def normal(mean: object, std: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        noise = given.pop()
        assert noise.shape == std.shape
        return noise

    monkeypatch.setattr(torch, "normal", normal)
    yield given
    assert not given  # the tensor was drawn


def captum_order(z: np.ndarray, x: np.ndarray, sigma: float) -> torch.Tensor:
    """Our noise [S, N, ...], scaled per sample, in Captum's order (row n·S + s)."""
    spread = x.reshape(len(x), -1).max(axis=1) - x.reshape(len(x), -1).min(axis=1)
    scaled = z * (sigma * spread).reshape(1, -1, *[1] * (x.ndim - 1)).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(scaled.swapaxes(0, 1)).reshape(-1, *x.shape[1:]))


@pytest.mark.parametrize("method", ["vanilla", "guided", "deconvnet"])
def test_smoothgrad_matches_captum_noise_tunnel(
    case: Case, captum_noise: list[torch.Tensor], method: str
) -> None:
    samples, sigma = 5, 0.2
    z = smoothgrad_noise(tuple(case.image.shape), samples, seed=11)
    explain = build_smoothgrad_model(case.model, method, sigma)
    got = session(explain).run(["saliency"], case.feeds(smoothgrad_noise=z))[0]

    base = {
        "vanilla": lambda: Saliency(case.net),
        "guided": lambda: GuidedBackprop(case.net),
        "deconvnet": lambda: Deconvolution(case.net),
    }[method]()
    captum_noise.append(captum_order(z, case.image.numpy(), sigma))
    kwargs = {"abs": False} if method == "vanilla" else {}
    want = NoiseTunnel(base).attribute(
        case.image, nt_type="smoothgrad", nt_samples=samples, target=TARGETS, **kwargs
    )
    assert_close(got, want.detach().numpy())


def test_smoothgrad_noise_is_reproducible_and_sized_by_the_input() -> None:
    a = smoothgrad_noise((2, 3, 4, 4), 3, seed=1)
    assert a.shape == (3, 2, 3, 4, 4) and a.dtype == np.float32
    np.testing.assert_array_equal(a, smoothgrad_noise((2, 3, 4, 4), 3, seed=1))
    assert not np.array_equal(a, smoothgrad_noise((2, 3, 4, 4), 3, seed=2))


# ---------------------------------------------------------------- Integrated Gradients


def captum_ig(
    case: Case, baseline: torch.Tensor | float, steps: int, method: str
) -> tuple[np.ndarray, np.ndarray]:
    attributions, delta = IntegratedGradients(case.net).attribute(
        case.image,
        baselines=baseline,
        target=TARGETS,
        n_steps=steps,
        method=method,
        return_convergence_delta=True,
    )
    return attributions.detach().numpy(), delta.detach().numpy()


@pytest.mark.parametrize("baseline", ["zeros", "constant:0.3"])
@pytest.mark.parametrize("steps", [8, 24])
def test_integrated_gradients_matches_captum_gauss_legendre(
    case: Case, baseline: str, steps: int
) -> None:
    spec = Baseline.parse(baseline)
    explain = build_integrated_gradients_model(case.model, steps, "gausslegendre", spec)
    got, gap = session(explain).run(["saliency", "completeness_gap"], case.feeds())
    want, delta = captum_ig(case, spec.value, steps, "gausslegendre")
    assert_close(got, want)
    # Captum's convergence delta is the same quantity: Σ attributions − (f(x) − f(x')).
    assert gap.shape == (2,)
    np.testing.assert_allclose(gap, delta, atol=1e-4 * float(np.abs(want).sum()))


@pytest.mark.parametrize("integration", ["riemann_left", "riemann_right", "riemann_middle"])
def test_integrated_gradients_matches_captum_riemann(case: Case, integration: str) -> None:
    explain = build_integrated_gradients_model(case.model, 12, integration)  # type: ignore[arg-type]
    got = session(explain).run(["saliency"], case.feeds())[0]
    assert_close(got, captum_ig(case, 0.0, 12, integration)[0])


def test_trapezoid_is_captums_times_n_over_n_minus_1(case: Case) -> None:
    """Captum's trapezoid weighs n points by 1/n (ends halved), which sums to (n−1)/n;
    ours spaces them 1/(n−1) apart, so its weights sum to 1 and the gap goes to 0."""
    steps = 10
    explain = build_integrated_gradients_model(case.model, steps, "riemann_trapezoid")
    got = session(explain).run(["saliency"], case.feeds())[0]
    assert_close(got * (steps - 1) / steps, captum_ig(case, 0.0, steps, "riemann_trapezoid")[0])


def test_given_and_blurred_baselines_match_captum(case: Case) -> None:
    rng = np.random.default_rng(3)
    given = rng.standard_normal(case.image.shape).astype(np.float32)
    explain = build_integrated_gradients_model(case.model, 6, baseline=Baseline("input"))
    got = session(explain).run(["saliency"], case.feeds(ig_baseline=given))[0]
    assert_close(got, captum_ig(case, torch.from_numpy(given), 6, "gausslegendre")[0])

    sigma = 1.5
    explain = build_integrated_gradients_model(case.model, 6, baseline=Baseline("blur", sigma))
    got = session(explain).run(["saliency"], case.feeds())[0]
    # scipy's Gaussian, edges repeated ("nearest"), over the two spatial axes only.
    blurred = ndimage.gaussian_filter(
        case.image.numpy().astype(np.float64),
        sigma=(0, 0, sigma, sigma),
        mode="nearest",
        truncate=3.0,
    ).astype(np.float32)
    assert len(gaussian_kernel(sigma)) == 2 * int(3 * sigma + 0.5) + 1
    assert_close(got, captum_ig(case, torch.from_numpy(blurred), 6, "gausslegendre")[0])


def test_completeness_gap_shrinks_as_steps_grow(case: Case) -> None:
    gaps = []
    for steps in (2, 8, 32, 128):
        explain = build_integrated_gradients_model(case.model, steps, "riemann_right")
        gap = session(explain).run(["completeness_gap"], case.feeds())[0]
        gaps.append(float(np.abs(gap).mean()))
    assert all(b < a for a, b in itertools.pairwise(gaps)), gaps
    assert gaps[-1] < gaps[0] / 10, gaps


def test_outputs_stay_the_callers(case: Case) -> None:
    """The model's own outputs are x's, at the caller's batch size."""
    explain = build_integrated_gradients_model(case.model, 4)
    probs = session(explain).run(["probs"], case.feeds())[0]
    want = torch.softmax(case.net(case.image), dim=1).detach().numpy()
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- fixed batch sizes


def _fixed_batch_export(net: nn.Module, batch: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(), (torch.randn(batch, 3, SIDE, SIDE),), buffer, dynamo=False,
            input_names=["image"], output_names=["logits"], opset_version=17,
        )  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


class _BakedBatch(nn.Module):
    """Flattens with view(1, -1): the export's Reshape holds the batch size, 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.fc = nn.Linear(4 * 8 * 8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).view(1, -1))


def test_fixed_batch_is_freed_when_nothing_bakes_it_in(case: Case) -> None:
    fixed = _fixed_batch_export(case.net, batch=1)
    explain = build_integrated_gradients_model(fixed, 6)
    dynamic = build_integrated_gradients_model(case.model, 6)
    feeds = case.feeds()
    got = session(explain).run(["saliency"], feeds)[0]  # a batch of 2 through a batch-1 export
    np.testing.assert_allclose(got, session(dynamic).run(["saliency"], feeds)[0], atol=1e-6)


def test_baked_batch_is_refused_clearly() -> None:
    model = _fixed_batch_export(_BakedBatch(), batch=1)
    with pytest.raises(RewriteError, match=r"keeps a batch of 1.*dynamic batch axis"):
        build_smoothgrad_model(model)
    with pytest.raises(RewriteError, match="Integrated Gradients"):
        build_integrated_gradients_model(model)


def test_every_offered_gradient_builds_and_no_other(case: Case) -> None:
    """The `gradient` choices the registry lists are the ones the batch build knows (the
    batch methods look the base method up without the registry), and another is refused."""
    assert set(GRADIENT.choices or ()) == set(GRADIENT_METHODS)
    for name in GRADIENT_METHODS:
        build_smoothgrad_model(case.model, name, 0.1)
    with pytest.raises(RewriteError, match=r"SmoothGrad averages or integrates one of"):
        build_smoothgrad_model(case.model, "smoothgrad")


@pytest.mark.parametrize("runtime", runtimes.others())
def test_blurred_baseline_and_noise_agree_across_runtimes(case: Case, runtime: str) -> None:
    blur = build_integrated_gradients_model(case.model, 4, baseline=Baseline("blur", 1.5))
    noisy = build_smoothgrad_model(case.model, "guided", 0.2)
    z = smoothgrad_noise(tuple(case.image.shape), 3, seed=2)
    for explain, feeds in ((blur, case.feeds()), (noisy, case.feeds(smoothgrad_noise=z))):
        (want,) = runtimes.load(runtimes.REFERENCE, explain)(feeds, ["saliency"])
        (got,) = runtimes.load(runtime, explain)(feeds, ["saliency"])
        assert_close(got, want)


def test_seed_computed_inside_the_graph_from_the_explained_output(case: Case) -> None:
    """A post-pass may replace the `output_grad` input by a seed computed in the graph from
    the explained output of x (e.g. the one-hot of a targets input): the explained output
    is the caller's [N, ...] one, so that works for the batch methods too."""
    from onnx import TensorProto, helper
    from onnxplain.graph_rewrite.methods.batched import _sort_topologically

    explain = build_integrated_gradients_model(case.model, 4)
    graph = explain.graph
    graph.input.remove(next(i for i in graph.input if i.name == "output_grad"))
    graph.input.append(helper.make_tensor_value_info("targets", TensorProto.INT64, ["batch"]))
    on_off = helper.make_tensor("on_off", TensorProto.FLOAT, [2], [0.0, 1.0])
    graph.initializer.append(on_off)
    # The seed reads the explained output (the logits of x) for its class count.
    explained = default_output(case.model)
    graph.node.extend(
        [
            helper.make_node("Shape", [explained], ["classes"], start=1),
            helper.make_node("OneHot", ["targets", "classes", "on_off"], ["output_grad"]),
        ]
    )
    _sort_topologically(graph)
    got = session(explain).run(
        ["saliency", "completeness_gap"],
        {"image": case.image.numpy(), "targets": np.array(TARGETS, np.int64)},
    )
    want = session(build_integrated_gradients_model(case.model, 4)).run(
        ["saliency", "completeness_gap"], case.feeds()
    )
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
