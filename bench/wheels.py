"""Pretrained ONNX models as their PyPI wheels ship them, fetched once into a cache.

The bench measures the files a user gets from `pip install`, so it takes them from the
pinned wheel itself (`pip download --no-deps`) rather than from a copy kept elsewhere.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench"


class FetchError(RuntimeError):
    """The wheel could not be downloaded, or it lacks the member asked for."""


def _wheel(requirement: str, cache: Path) -> Path:
    name, version = requirement.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", requirement, "-d", str(cache)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise FetchError(f"pip download {requirement} failed: {done.stderr.strip()[-500:]}")
        found = sorted(cache.glob(pattern))
    if not found:
        raise FetchError(f"pip download {requirement} left no wheel matching {pattern}")
    return found[0]


def fetch(requirement: str, member: str, cache: Path = CACHE) -> Path:
    """The file `member` of the wheel `requirement` ("name==version"), extracted into `cache`."""
    target = cache / requirement.replace("==", "-") / Path(member).name
    if not target.exists():
        with zipfile.ZipFile(_wheel(requirement, cache)) as wheel:
            try:
                data = wheel.read(member)
            except KeyError:
                raise FetchError(f"{requirement} has no {member}") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return target
