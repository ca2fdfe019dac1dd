"""A model repository set up wrong: config.toml typos are errors that name the key, files
the server skips and empty repositories are logged with a hint, and a corrupt model's
reason (without paths) reaches ListModels."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from onnxplain.graph_rewrite.methods import ALL_METHODS
from onnxplain.server import Repository, SessionFactory
from onnxplain.server.core.errors import ConfigError
from onnxplain.server.store.config import load_config
from onnxplain.server.store.repository import FailedModel, LoadedModel

from helpers.server_support import DEMO

SESSIONS = SessionFactory("cpu", threads=1)


def _config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "config.toml").write_text(text)
    return tmp_path


def test_the_shipped_config_still_loads() -> None:
    config = load_config(DEMO)
    assert config.default_method == "guided" and config.preprocessing is not None
    assert config.preprocessing.color_mode == "L" and len(config.labels) == 10


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_served_method_may_be_the_default(tmp_path: Path, method: str) -> None:
    assert load_config(_config(tmp_path, f'default_method = "{method}"\n')).default_method == method


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            'defualt_method = "vanilla"\n',
            "unknown key defualt_method (did you mean 'default_method'?)",
        ),
        (
            "[preprocesing]\nheight = 8\nwidth = 8\n",
            "unknown table [preprocesing] (did you mean 'preprocessing'?)",
        ),
        (
            "[preprocessing]\nheigth = 8\nheight = 8\nwidth = 8\n",
            "unknown key heigth in [preprocessing] (did you mean 'height'?)",
        ),
        ('colour = "red"\n', "unknown key colour"),
    ],
)
def test_unknown_keys_and_tables_are_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, text))
    assert named in str(info.value)
    # The keys it does take are listed too.
    assert "default_method" in str(info.value) or "color_mode" in str(info.value)


def test_every_unknown_key_is_named_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, 'inptu = "x"\noutptu = "y"\n[extra]\na = 1\n'))
    message = str(info.value)
    assert "inptu" in message and "outptu" in message and "[extra]" in message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[preprocessing]\nheight = "8"\nwidth = 8\n', "height must be an integer"),
        ("[preprocessing]\nheight = true\nwidth = 8\n", "height must be an integer"),
        ('[preprocessing]\nheight = 8\nwidth = 8\nmean = ["a"]\n', "mean must be numbers"),
        ('[preprocessing]\nheight = 8\nwidth = 8\nlayout = "CHW"\n', "layout 'CHW'"),
        ("preprocessing = 3\n", "must be a table"),
        ('default_method = "gradcam-ish"\n', "default_method 'gradcam-ish'"),
        ("input = 3\n", "input must be a string"),
    ],
)
def test_wrong_value_types_are_config_errors(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("[", r"\[")):
        load_config(_config(tmp_path, text))


def test_a_typo_in_config_is_the_models_reason_in_the_listing(tmp_path: Path) -> None:
    shutil.copytree(DEMO, tmp_path / "digits")
    config = tmp_path / "digits" / "config.toml"
    config.write_text(config.read_text().replace("default_method", "defualt_method"))
    entry = Repository.load(tmp_path, SESSIONS).entry("digits")
    assert isinstance(entry, FailedModel) and "defualt_method" in entry.error


def _warnings(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_a_model_file_with_another_name_is_skipped_with_a_hint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(DEMO, tmp_path / "digits")
    (tmp_path / "cls").mkdir()
    shutil.copyfile(DEMO / "model.onnx", tmp_path / "cls" / "cls.onnx")
    shutil.copyfile(DEMO / "model.onnx", tmp_path / "loose.onnx")
    with caplog.at_level(logging.WARNING):
        repository = Repository.load(tmp_path, SESSIONS)
    assert repository.names() == ["digits"]
    logged = _warnings(caplog)
    assert "cls is skipped: it has no model.onnx (found cls.onnx)" in logged
    assert "rename the model file to model.onnx" in logged
    assert f"{tmp_path / 'loose.onnx'} is not served: move it to" in logged
    assert str(tmp_path / "loose" / "model.onnx") in logged


def test_models_pointed_at_one_models_folder_says_to_use_the_parent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(DEMO, tmp_path / "digits")
    with caplog.at_level(logging.WARNING):
        repository = Repository.load(tmp_path / "digits", SESSIONS)
    assert repository.names() == []
    logged = _warnings(caplog)
    assert "holds a model.onnx itself" in logged and f"--models {tmp_path}" in logged
    assert "no models in" in logged


def test_an_empty_repository_is_logged_with_the_layout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert Repository.load(tmp_path, SESSIONS).names() == []
    assert f"no models in {tmp_path}: each model goes in {tmp_path}/<name>/model.onnx" in (
        _warnings(caplog)
    )


def test_dot_folders_are_never_models(tmp_path: Path) -> None:
    # Where a new version is built before it is renamed into place.
    shutil.copytree(DEMO, tmp_path / ".digits.new")
    shutil.copytree(DEMO, tmp_path / "digits")
    assert Repository.load(tmp_path, SESSIONS).names() == ["digits"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"this is not an ONNX model", "model.onnx is not an ONNX model"),
        (b"", "the model has no float input"),  # empty bytes parse as an empty model
    ],
)
def test_a_corrupt_models_reason_is_listed_without_paths(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, says: str
) -> None:
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "model.onnx").write_bytes(content)
    with caplog.at_level(logging.DEBUG):
        entry = Repository.load(tmp_path, SESSIONS).entry("corrupt")
    assert isinstance(entry, FailedModel)
    assert says in entry.error, entry.error
    assert "server log" not in entry.error and str(tmp_path) not in entry.error
    assert "/" not in entry.error and "Traceback" not in entry.error
    # The log has it in one line at ERROR; the traceback only at DEBUG.
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None


def test_a_good_model_next_to_them_still_loads(tmp_path: Path) -> None:
    shutil.copytree(DEMO, tmp_path / "digits")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "model.onnx").write_bytes(b"\x08\x07garbage")
    repository = Repository.load(tmp_path, SESSIONS)
    assert isinstance(repository.entry("digits"), LoadedModel)
    assert isinstance(repository.entry("corrupt"), FailedModel)
