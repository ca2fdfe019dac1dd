"""What the server reads of a model folder, and what it says when a file is wrong.

- Symbolic links: a model folder, its model.onnx, config.toml and sanity.json may link
  inside the repository (a `latest` folder, Kubernetes' `..data` links) but not out of it,
  as labels may not leave their model folder and ONNX refuses any link for external data.
- A model that fails to load is listed with a reason that names the file and says what is
  wrong with it, in words of its own: not the library's exception text (that goes to the
  server's log, beside the reason).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxplain.client import Client, Retry
from onnxplain.server import Repository, SessionFactory
from onnxplain.server.store.repository import FailedModel, LoadedModel

from helpers.server_support import DEMO, running_server

SESSIONS = SessionFactory("cpu", threads=1)


def _copy_demo(folder: Path, files: tuple[str, ...] = ("model.onnx", "config.toml", "labels.txt")):
    folder.mkdir(parents=True)
    for name in files:
        shutil.copy(DEMO / name, folder / name)
    return folder


def _load(root: Path, name: str) -> LoadedModel | FailedModel:
    return Repository.load(root, SESSIONS).entry(name)


# --- links ------------------------------------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(repository, a folder outside it)."""
    root, outside = tmp_path / "repo", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    return root, outside


def test_a_model_folder_linked_out_of_the_repository_is_refused(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    _copy_demo(outside / "digits")
    (root / "digits").symlink_to(outside / "digits")
    entry = _load(root, "digits")
    assert isinstance(entry, FailedModel)
    assert "the model folder 'digits' is a symbolic link out of the model repository" in (
        entry.error
    )
    assert str(outside) not in entry.error


@pytest.mark.parametrize("name", ["model.onnx", "config.toml", "labels.txt"])
def test_a_model_file_linked_out_of_the_repository_is_refused(
    layout: tuple[Path, Path], name: str
) -> None:
    root, outside = layout
    folder = _copy_demo(root / "digits")
    shutil.move(folder / name, outside / name)
    (folder / name).symlink_to(outside / name)
    entry = _load(root, "digits")
    assert isinstance(entry, FailedModel)
    assert f"{name} is a symbolic link out of the model repository" in entry.error


def test_a_sanity_report_linked_out_is_ignored_with_a_warning(
    layout: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The report is advice, not config: as a damaged one, it is ignored, not fatal."""
    root, outside = layout
    shapes = DEMO.parent / "shapes"
    folder = root / "shapes"
    shutil.copytree(shapes, folder)
    assert isinstance(_load(root, "shapes"), LoadedModel)
    assert _load(root, "shapes").sanity is not None  # type: ignore[union-attr]
    shutil.move(folder / "sanity.json", outside / "sanity.json")
    (folder / "sanity.json").symlink_to(outside / "sanity.json")
    with caplog.at_level(logging.WARNING):
        entry = _load(root, "shapes")
    assert isinstance(entry, LoadedModel) and entry.sanity is None
    assert "sanity.json is a symbolic link out of the model repository" in caplog.text


def test_links_inside_the_repository_are_followed(layout: tuple[Path, Path]) -> None:
    """A `latest` folder linking to a version, and Kubernetes' `..data` links of a volume."""
    root, _ = layout
    _copy_demo(root / "digits-v3")
    (root / "latest").symlink_to("digits-v3")
    data = _copy_demo(root / "..data" / "mounted")
    (root / "mounted").mkdir()
    for name in ("model.onnx", "config.toml", "labels.txt"):
        (root / "mounted" / name).symlink_to(os.path.relpath(data / name, root / "mounted"))
    repository = Repository.load(root, SESSIONS)
    assert repository.names() == ["digits-v3", "latest", "mounted"]
    assert all(isinstance(repository.entry(n), LoadedModel) for n in repository.names())


def test_a_repository_that_is_itself_a_link_serves(layout: tuple[Path, Path]) -> None:
    """--models may name a link: the check is against where it leads."""
    root, outside = layout
    _copy_demo(outside / "digits")
    (root / "models").symlink_to(outside)
    assert isinstance(_load(root / "models", "digits"), LoadedModel)


# --- reasons ----------------------------------------------------------------------------------


def _external_data_model(folder: Path) -> None:
    """A one-MatMul model whose weight lives in external data, w.data beside model.onnx."""
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True)
    onnx.save(
        model, folder / "model.onnx", save_as_external_data=True, location="w.data",
        size_threshold=0,
    )  # fmt: skip


def test_external_data_loads_when_it_is_a_file(tmp_path: Path) -> None:
    _external_data_model(tmp_path / "matmul")
    assert isinstance(_load(tmp_path, "matmul"), LoadedModel)


@pytest.mark.parametrize("how", ["missing", "link"])
def test_bad_external_data_is_named_without_onnx_internals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """Before: `ValidationError: Data of TensorProto ( tensor name: w) should be stored in
    w.data, but it is a symbolic link.` reached every client."""
    root = tmp_path / "repo"
    _external_data_model(root / "matmul")
    data = root / "matmul" / "w.data"
    if how == "link":
        shutil.move(data, root / "w.data")  # inside the repository: ONNX refuses it all the same
        data.symlink_to(root / "w.data")
    else:
        data.unlink()
    with caplog.at_level(logging.ERROR):
        entry = _load(root, "matmul")
    assert isinstance(entry, FailedModel)
    says = {
        "missing": "model.onnx: its external data file w.data (tensor 'w') is missing or not a "
        "regular file",
        "link": "model.onnx: its external data file w.data (tensor 'w') is a symbolic link: "
        "external data must be a real file in the model folder",
    }[how]
    assert entry.error == says
    for internal in ("ValidationError", "TensorProto", "should be stored", str(root)):
        assert internal not in entry.error
    assert "ValidationError: Data of TensorProto" in caplog.text  # the detail, in the log


def test_a_file_that_is_no_onnx_says_so_to_clients_and_in_detail_to_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "repo"
    _copy_demo(root / "digits")
    (root / "broken").mkdir()
    (root / "broken" / "model.onnx").write_bytes(b"\x08\x07garbage")
    with (
        caplog.at_level(logging.ERROR),
        running_server(root) as (service, _),
        Client(f"127.0.0.1:{service.port}", retry=Retry(total_s=0)) as client,
    ):
        listed = {m.name: m for m in client.models()}
        got = client.model("broken")
    says = "model.onnx is not an ONNX model: the file does not parse as one"
    assert listed["broken"].error == says and got.error == says
    assert listed["digits"].available
    assert "Error parsing message" in caplog.text and "DecodeError" in caplog.text


def test_a_model_onnxruntime_refuses_is_named_without_its_error_codes(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("Relu", ["x"], ["y"])
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 99)]
    )
    model.ir_version = 10
    (tmp_path / "future").mkdir()
    onnx.save(model, tmp_path / "future" / "model.onnx")
    entry = _load(tmp_path, "future")
    assert isinstance(entry, FailedModel)
    assert "[ONNXRuntimeError]" not in entry.error and "Traceback" not in entry.error
    assert entry.error, entry
