"""Bodies that are not requests, tensors no model takes, and images that are no PNG or JPEG
the server decodes (decompression bombs among them), over a real socket to a real
`onnxplain serve`: each is INVALID_ARGUMENT (or another client-fault status) with at most
one log line, never INTERNAL and never a traceback in the log."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from onnxplain.server import Explainer, Repository, SessionFactory
from onnxplain.server.core import imaging
from onnxplain.server.core.errors import InvalidImage
from onnxplain.server.core.imaging import decode
from onnxplain.server.ops.refusals import RefusalLog
from onnxplain.server.protocols.web import start_web_page
from PIL import Image

from onnxplain.v1 import explain_pb2 as pb
from onnxplain.v1.tensors import TensorError, to_array, to_tensor

from helpers.bombs import jpeg_bomb, noisy_png, png, png_bomb, png_header_only
from helpers.serve_process import ServeProcess
from helpers.server_support import DEMO, SAMPLES, make_repository

# A fuzzed body may happen to decode into a request the server refuses for what it says
# (unknown model, wrong shape) or even a valid one; it must never be the server's fault.
CLIENT_FAULTS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
GOOD = np.load(SAMPLES / "digit3.npy")
EXPLAIN = "/onnxplain.v1.ExplainService/Explain"
# One line per refused request, but at most this many of one kind, and this many in all, per
# window of WINDOW_S (server/ops/refusals.py's defaults).
PER_KIND, BURST, WINDOW_S = 5, 50, 10
# "... INFO /onnxplain.v1.ExplainService/Explain INVALID_ARGUMENT (InvalidImage) from ipv4:..."
REFUSED_LINE = re.compile(r" INFO (/\S+) ([A-Z_]+) \((\w+)\) from ipv")
COUNT_LINE = re.compile(r"(\d+) more refused requests not logged")


def _bad_images() -> list[bytes]:
    """Images no server should decode: bombs, headers without pixels, damage, other formats."""
    good = noisy_png()
    damaged = bytearray(good)
    damaged[30] ^= 0xFF  # inside IHDR: its CRC no longer matches
    return [
        png_bomb(),  # 179.6 MP in 21 KB: PIL's own DecompressionBombError
        png_bomb(8_000, 8_000),  # 64 MP: over the server's 50 MP, under PIL's error limit
        png_bomb(9_500, 9_500),  # 90 MP: PIL only warns (DecompressionBombWarning)
        jpeg_bomb(),  # 4.2 gigapixels declared in a 16 x 16 JPEG
        png_header_only(40_000, 40_000),
        png_header_only(100, 100),  # under the limit, but no pixel data at all
        good[: len(good) // 2],  # truncated
        bytes(damaged),
        b"\x89PNG\r\n\x1a\n" + b"\0" * 40,  # a signature, then nothing that parses
        b"\xff\xd8\xff" + b"\x01" * 40,
        good.replace(b"\x89PNG", b"GIF8", 1),
    ]


def _absurd_tensors(rng: np.random.Generator) -> Iterator[pb.Tensor]:
    float32 = pb.DATA_TYPE_FLOAT32
    for rank in (33, 64, 65, 100, 1000):
        yield pb.Tensor(dtype=float32, shape=[1] * rank, data=b"\0" * 4)
    yield pb.Tensor(dtype=float32, shape=[0, 2**62, 2**62])
    yield pb.Tensor(dtype=float32, shape=[0, 2**63 - 1])
    yield pb.Tensor(dtype=float32, shape=[2**31, 2**31], data=b"\0" * 16)
    yield pb.Tensor(dtype=float32, shape=[-(2**63), 1], data=b"\0" * 4)
    for _ in range(40):
        shape = rng.integers(-3, 2**40, size=int(rng.integers(0, 80))).tolist()
        yield pb.Tensor(
            dtype=int(rng.integers(0, 40)),  # type: ignore[arg-type]
            shape=shape,
            data=rng.bytes(int(rng.integers(0, 64))),
        )


def _bodies(seed: int = 12) -> list[tuple[str, bytes]]:
    """(RPC, body): random bytes, bit-flipped good requests, well-formed absurd requests."""
    rng = np.random.default_rng(seed)
    explain = "/onnxplain.v1.ExplainService/Explain"
    good = pb.ExplainRequest(model="digits", tensor=to_tensor(GOOD), targets=[3])
    good = good.SerializeToString()
    bodies = [(explain, rng.bytes(int(rng.integers(0, 300)))) for _ in range(120)]
    for _ in range(120):
        flipped = bytearray(good)
        for i in rng.integers(0, len(good), size=int(rng.integers(1, 8))):
            flipped[i] ^= 1 << int(rng.integers(0, 8))
        bodies.append((explain, bytes(flipped)))
    for tensor in _absurd_tensors(rng):
        request = pb.ExplainRequest(model="digits", tensor=tensor)
        bodies.append((explain, request.SerializeToString()))
    for image in _bad_images():
        bodies.append((explain, pb.ExplainRequest(model="digits", image=image).SerializeToString()))
    for rpc in ("GetModel", "ListModels"):
        path = f"/onnxplain.v1.ExplainService/{rpc}"
        bodies += [(path, rng.bytes(int(rng.integers(1, 100)))) for _ in range(10)]
    return bodies


def _check_log_is_bounded(log: str, refused: int, elapsed: float) -> Counter[tuple[str, ...]]:
    """Every refusal logged or counted; at most PER_KIND lines of a kind and BURST in all per
    window; no traceback; short lines. Returns the lines per kind (RPC, status, error)."""
    assert "Traceback" not in log and "Exception deserializing" not in log
    assert "DecompressionBomb" not in log  # PIL's warning or error never reaches the log
    kinds = Counter(m.groups() for m in map(REFUSED_LINE.search, log.splitlines()) if m)
    counted = sum(int(n) for n in COUNT_LINE.findall(log))
    windows = 1 + int(elapsed // WINDOW_S) + 1  # the calls may straddle a window's end
    assert sum(kinds.values()) + counted == refused, (kinds, counted, refused)
    assert sum(kinds.values()) <= BURST * windows
    assert all(n <= PER_KIND * windows for n in kinds.values()), kinds
    assert all(len(line) < 500 for line in log.splitlines())
    return kinds


def test_absurd_tensors_are_tensor_errors_not_numpy_crashes() -> None:
    for tensor in _absurd_tensors(np.random.default_rng(3)):
        try:
            to_array(tensor)
        except TensorError:
            continue
        # The only absurd tensors that decode are random ones that happen to be consistent.
        assert len(tensor.shape) <= 32


def test_fuzzed_bodies_are_client_faults_with_one_log_line_each(tmp_path: Path) -> None:
    bodies = _bodies()
    codes: dict[grpc.StatusCode, int] = {}
    with ServeProcess(make_repository(tmp_path), "--drain-delay", "0") as server:
        started = time.monotonic()
        with grpc.insecure_channel(server.address) as channel:
            for path, body in bodies:
                call = channel.unary_unary(path)  # raw bytes in and out: no serializers
                try:
                    call(body, timeout=30)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    code = exc.code()
                    assert code in CLIENT_FAULTS, (code, exc.details(), body[:80])
                    assert "Traceback" not in (exc.details() or "")
                codes[code] = codes.get(code, 0) + 1
            # Still serving, and right.
            good = channel.unary_unary(
                "/onnxplain.v1.ExplainService/Explain",
                request_serializer=pb.ExplainRequest.SerializeToString,
                response_deserializer=pb.ExplainResponse.FromString,
            )(pb.ExplainRequest(model="digits", tensor=to_tensor(GOOD)), timeout=30)
            assert list(good.targets) == [3]
        elapsed = time.monotonic() - started
        server.signal(signal.SIGTERM)
        assert server.wait(30) == 0
        log = server.log()
    # Most bodies do not decode at all; every one of those is INVALID_ARGUMENT.
    assert codes[grpc.StatusCode.INVALID_ARGUMENT] > len(bodies) // 2, codes
    # One short line per refused body, up to 5 of a kind per 10 s window; the rest counted.
    refused = len(bodies) - codes.get(grpc.StatusCode.OK, 0)
    kinds = _check_log_is_bounded(log, refused, elapsed)
    assert kinds[(EXPLAIN, "INVALID_ARGUMENT", "InvalidRequest")] >= PER_KIND  # the flood...
    assert kinds[(EXPLAIN, "INVALID_ARGUMENT", "InvalidImage")] >= 1  # ...hides no other kind
    lines = sum(kinds.values())
    assert len(log.encode()) < 500 * lines + 200 * len(kinds) + 4000, len(log.encode())


def test_a_decompression_bomb_is_one_it_is_what_pil_itself_refuses() -> None:
    """The oracle for the bomb: PIL's own guard, which the server's stricter limit precedes."""
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(png_bomb()))
    assert len(png_bomb()) < 25_000


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (
            png_bomb(),
            "the image is 13400x13400 pixels (179.6 megapixels); this server decodes "
            "images of at most 50 megapixels",
        ),
        (png_bomb(9_500, 9_500), "9500x9500 pixels (90.2 megapixels)"),
        (jpeg_bomb(), "the image is 65000x65000 pixels (4225.0 megapixels)"),
        (png_header_only(7_072, 7_071), "(50.0 megapixels); this server decodes images of at"),
        (png_header_only(100, 100), "the PNG image could not be decoded"),
        (noisy_png()[:600], "the PNG image could not be decoded: image file is truncated"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "the PNG image could not be decoded: broken PNG file"),
        (b"\xff\xd8\xff" + b"\x01" * 40, "the JPEG image could not be decoded"),
        (png().replace(b"\x89PNG", b"GIF8", 1), "the image is GIF; send a PNG or JPEG"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "the image is WebP; send a PNG or JPEG"),
        (b"this is not an image", "the image could not be decoded as PNG or JPEG"),
        (b"", "the image could not be decoded as PNG or JPEG"),
    ],
)
def test_every_undecodable_image_is_invalid_image_saying_why(data: bytes, says: str) -> None:
    with pytest.raises(InvalidImage) as raised:
        decode(data)
    assert says in str(raised.value), str(raised.value)
    assert len(str(raised.value)) < 400 and "Traceback" not in str(raised.value)


def test_the_pixel_limit_is_the_servers_own_and_exact() -> None:
    # 7,071 x 7,071 is 49,999,041 pixels: past the limit's check, then no pixel data.
    with pytest.raises(InvalidImage, match="could not be decoded"):
        decode(png_header_only(7_071, 7_071))
    assert imaging.max_pixels() == imaging.DEFAULT_MAX_PIXELS == 50_000_000
    try:
        imaging.set_max_pixels(100)
        assert decode(png((10, 10))).size == (10, 10)
        with pytest.raises(InvalidImage, match=r"11x10 pixels .*at most 0.0001 megapixels"):
            decode(png((11, 10)))
    finally:
        imaging.set_max_pixels(imaging.DEFAULT_MAX_PIXELS)
    with pytest.raises(ValueError):
        imaging.set_max_pixels(0)


def test_good_images_of_every_png_mode_and_a_jpeg_still_decode() -> None:
    for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
        assert decode(png((5, 3), mode)).size == (5, 3), mode
    buffer = io.BytesIO()
    Image.new("CMYK", (6, 4)).save(buffer, "JPEG")
    assert decode(buffer.getvalue()).size == (6, 4)


def test_200_bombs_are_invalid_argument_with_a_bounded_log(tmp_path: Path) -> None:
    """The issue's case: each bomb was INTERNAL with a traceback in the log (200 calls: 270 KB
    of log). Now INVALID_ARGUMENT naming the limit, and at most PER_KIND lines per window."""
    calls = 200
    request = pb.ExplainRequest(model="digits", image=png_bomb()).SerializeToString()
    with ServeProcess(make_repository(tmp_path), "--drain-delay", "0") as server:
        started = time.monotonic()
        with grpc.insecure_channel(server.address) as channel:
            call = channel.unary_unary(EXPLAIN)
            for _ in range(calls):
                with pytest.raises(grpc.RpcError) as raised:
                    call(request, timeout=30)
                assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "13400x13400 pixels" in (raised.value.details() or "")
                assert "at most 50 megapixels" in (raised.value.details() or "")
        elapsed = time.monotonic() - started
        server.signal(signal.SIGTERM)
        assert server.wait(30) == 0
        log = server.log()
    kinds = _check_log_is_bounded(log, calls, elapsed)
    assert set(kinds) == {(EXPLAIN, "INVALID_ARGUMENT", "InvalidImage")}
    refusals = [line for line in log.splitlines() if "InvalidImage" in line]
    assert sum(len(line) + 1 for line in refusals) < 300 * PER_KIND * 3, refusals


def test_a_smaller_limit_from_the_command_line(tmp_path: Path) -> None:
    request = pb.ExplainRequest(model="digits", image=png((40, 30))).SerializeToString()
    flags = ("--max-image-megapixels", "0.001")
    with (
        ServeProcess(make_repository(tmp_path), *flags) as server,
        grpc.insecure_channel(server.address) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        channel.unary_unary(EXPLAIN)(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "40x30 pixels (0.0 megapixels); this server decodes images of at most 0.001" in (
        raised.value.details() or ""
    )


@pytest.mark.parametrize("image", _bad_images(), ids=lambda b: f"{len(b)}B")
def test_the_web_page_answers_400_for_every_bad_image(image: bytes, tmp_path: Path) -> None:
    core = _web_core(tmp_path)
    page = start_web_page(core, "127.0.0.1", 0)
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{page.port}/api/explain?model=digits", data=image, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=30)
    finally:
        page.stop()
    assert raised.value.code == 400
    message = json.loads(raised.value.read())["error"]
    assert "image" in message and "internal error" not in message, message


_CORES: dict[str, Explainer] = {}


def _web_core(tmp_path: Path) -> Explainer:
    """One core for every web case: loading the demo model is the slow part."""
    if "digits" not in _CORES:
        (tmp_path / "digits").mkdir()
        for name in ("model.onnx", "config.toml", "labels.txt"):
            (tmp_path / "digits" / name).write_bytes((DEMO / name).read_bytes())
        _CORES["digits"] = Explainer(Repository.load(tmp_path, SessionFactory("cpu", threads=1)))
    return _CORES["digits"]


def test_refusals_of_one_kind_do_not_hide_another(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    refusals = RefusalLog(logging.getLogger("kinds-test"), 50, 10.0, lambda: now[0], per_kind=2)
    with caplog.at_level(logging.INFO, "kinds-test"):
        for i in range(100):
            refusals.refused("bomb %d", i, kind="Explain INVALID_ARGUMENT (InvalidImage)")
        refusals.refused("typo", kind="Explain NOT_FOUND (ModelNotFound)")
        refusals.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "bomb 0",
        "bomb 1",
        "typo",
        "98 more refused requests not logged (Explain INVALID_ARGUMENT (InvalidImage): over 2 "
        "lines of the kind or 50 in all in 10 s)",
    ]


@pytest.mark.parametrize("rank", [33, 65])
def test_too_many_dimensions_say_so(rank: int) -> None:
    tensor = pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=[1] * rank, data=b"\0" * 4)
    with pytest.raises(TensorError, match=f"{rank} dimensions; at most 32"):
        to_array(tensor)


def test_refusal_log_keeps_a_burst_per_window_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    refusals = RefusalLog(logging.getLogger("refusals-test"), 3, 10.0, lambda: now[0])
    with caplog.at_level(logging.INFO, "refusals-test"):
        for i in range(5):
            refusals.refused("refused %d", i)
        now[0] = 10.5  # the next window: the count of the first, then a fresh burst
        refusals.refused("refused %d", 5)
        for i in range(6, 9):
            refusals.refused("refused %d", i)
        refusals.flush()
        refusals.flush()  # nothing more to say
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0",
        "refused 1",
        "refused 2",
        "2 more refused requests not logged (over 3 lines in 10 s)",
        "refused 5",
        "refused 6",
        "refused 7",
        "1 more refused requests not logged (over 3 lines in 10 s)",
    ]
