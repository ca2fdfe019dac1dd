"""Which folders of a model repository are models, and a hint for everything else.

A model is DIR/<name>/model.onnx. A file that is almost that (DIR/<name>/cls.onnx,
DIR/cls.onnx, or --models pointed at one model's own folder) is skipped, and the operator
is told how to fix it instead of finding a silently empty ListModels.

Folders whose name starts with a dot are never models: they are where a new version is
written before it is renamed into place (and where Kubernetes keeps a mounted volume's
data), so a half-written model is never loaded.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ConfigError

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.toml"


def model_folders(root: Path) -> list[Path]:
    """DIR/<name> for every <name>/model.onnx, in name order."""
    return sorted(p for p in _visible(root) if p.is_dir() and (p / MODEL_FILE).is_file())


def skipped_hints(root: Path) -> list[str]:
    """One line per thing in `root` that looks like a model but is not served, saying why."""
    hints = []
    own = sorted(p.name for p in _visible(root) if p.suffix == ".onnx" and p.is_file())
    if MODEL_FILE in own:
        hints.append(
            f"{root} holds a {MODEL_FILE} itself: --models takes the folder that holds model "
            f"folders, e.g. --models {root.parent} to serve it as {root.name!r}"
        )
    for name in (n for n in own if n != MODEL_FILE):
        stem = Path(name).stem
        hints.append(f"{root / name} is not served: move it to {root / stem / MODEL_FILE}")
    for folder in sorted(p for p in _visible(root) if p.is_dir()):
        if (folder / MODEL_FILE).is_file():
            continue
        found = sorted(p.name for p in folder.glob("*.onnx"))
        if found:
            hints.append(
                f"folder {folder} is skipped: it has no {MODEL_FILE} (found {', '.join(found)}); "
                f"rename the model file to {MODEL_FILE}"
            )
    return hints


def check_inside_repository(folder: Path, *files: Path) -> None:
    """ConfigError, naming the link, if `folder` (DIR/<name>) or one of its `files` that
    exists is a symbolic link out of the repository DIR.

    Links inside it are fine (a `latest` folder linking to `v3`, Kubernetes' `..data` links
    of a mounted volume), as labels may link inside their model folder; ONNX itself refuses
    any link for external data. A link out would serve whatever the link's owner points it
    at, outside the folder the operator handed the server.
    """
    root = folder.parent.resolve()
    if not _inside(folder.resolve(), root):
        raise ConfigError(
            f"the model folder {folder.name!r} is a symbolic link out of the model repository; "
            "move or copy the model into the repository"
        )
    for path in files:
        if path.exists() and not _inside(path.resolve(), root):
            raise ConfigError(
                f"{path.name} is a symbolic link out of the model repository; copy the file "
                "into the model folder instead"
            )


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def empty_hint(root: Path) -> str:
    return f"no models in {root}: each model goes in {root}/<name>/{MODEL_FILE}"


def _visible(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if not p.name.startswith(".")]
    except OSError:
        return []
