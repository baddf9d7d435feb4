"""Weights by model name: the bundled file, else the verified cache, else a download on first use.

A user names a model and never repeats a path: the registry's file is fetched once (pooch streams
it, with a progress bar), checked against the registry's sha256 (or its digest is recorded and
printed when none is published), moved into place by an atomic rename and shared by every later
command, and by other machines that mount the same ``$SAMMED_HOME``. Layout::

    $SAMMED_HOME/weights/NAME/FILE            the weights (only ever complete and verified)
    $SAMMED_HOME/weights/NAME/manifest.json   url, sha256, size, whether the hash was known
    $SAMMED_HOME/weights/NAME/.lock           one writer at a time (filelock)

``SAMMED_OFFLINE=1`` turns downloads into a one-line error naming the command to run elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from sammed.errors import CheckpointError, SammedError
from sammed.models.registry import ModelSpec

HOME_ENV = "SAMMED_HOME"
OFFLINE_ENV = "SAMMED_OFFLINE"
MANIFEST = "manifest.json"
PARTIAL_SUFFIX = ".part"
_LOCK = ".lock"
_TRUE = {"1", "true", "yes", "on"}
_CHUNK = 1 << 20
_TIMEOUT_S = 60

Notice = Callable[[str], None]


class WeightsError(SammedError):
    """A model's weights cannot be found, downloaded or verified."""


class OfflineError(WeightsError):
    """Weights are needed, are not cached, and downloads are turned off."""


@dataclass(frozen=True)
class CachedWeights:
    """One file in the cache; ``verified`` means its sha256 was known before it was downloaded."""

    path: Path
    url: str
    sha256: str
    size: int
    verified: bool


def print_notice(message: str) -> None:
    """Default notice sink: stderr, so stdout stays clean for scripts."""
    print(message, file=sys.stderr, flush=True)


def sammed_home() -> Path:
    """``$SAMMED_HOME``, else the platform's user cache folder (e.g. ``~/.cache/sammed``)."""
    value = os.environ.get(HOME_ENV, "").strip()
    if value:
        return Path(value).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("sammed"))


def downloads_disabled(offline: bool = False) -> bool:
    """True with ``--offline`` or ``SAMMED_OFFLINE`` set to 1/true/yes/on."""
    return offline or os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def model_dir(spec: ModelSpec) -> Path:
    return sammed_home() / "weights" / spec.name


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def normalise_sha256(value: str | None) -> str | None:
    """A 64-digit lower-case hex digest (an optional 'sha256:' prefix is accepted), or None."""
    if value is None:
        return None
    text = value.strip().lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise WeightsError(f"not a sha256 digest (64 hexadecimal digits): {value!r}")
    return text


def bundled_weights(spec: ModelSpec) -> Path | None:
    """The file shipped inside the package, checked against the registry's sha256."""
    path = spec.bundled_path
    if path is None:
        return None
    if not path.is_file():
        raise CheckpointError(f"the bundled weights of {spec.name} are missing: {path}")
    expected = normalise_sha256(spec.sha256)
    if expected is not None and file_sha256(path) != expected:
        raise CheckpointError(f"the bundled weights of {spec.name} ({path}) do not match their sha256: reinstall sammed")
    return path


def cached_weights(spec: ModelSpec) -> CachedWeights | None:
    """The complete file recorded in the model's manifest, or None (absent, partial or stale)."""
    folder = model_dir(spec)
    try:
        record = json.loads((folder / MANIFEST).read_text())
        entry = CachedWeights(
            folder / Path(record["file"]).name, str(record["url"]), str(record["sha256"]), int(record["size"]),
            bool(record.get("verified")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not entry.path.is_file() or entry.path.stat().st_size != entry.size:
        return None
    if spec.sha256 is not None and entry.sha256 != normalise_sha256(spec.sha256):
        return None  # the registry now names another file
    return entry


def offline_message(spec: ModelSpec) -> str:
    """One line: the exact command to fill the cache elsewhere, and the file's manual URL."""
    return (
        f"{spec.name} weights are not in the cache ({model_dir(spec)}) and downloads are off "
        f"({OFFLINE_ENV}=1 or --offline): run 'sammed models download {spec.name}' on a machine with a "
        f"network and the same {HOME_ENV}, or download {spec.download_url} yourself and pass --checkpoint PATH"
    )


def missing_weights_message(spec: ModelSpec) -> str:
    """Why a model without a direct download needs --checkpoint, and how to cache a file for it."""
    if spec.checkpoint_file is None:
        return f"--checkpoint is required: {spec.name} has no released weights (give a .pth file you trained)"
    return (
        f"--checkpoint is required: download {spec.checkpoint_file} from {spec.source_url or 'its authors'} "
        f"(no direct link to fetch), or cache it once with 'sammed models download {spec.name} --url URL'"
    )


def resolve_weights(spec: ModelSpec, offline: bool = False, notice: Notice = print_notice) -> Path | None:
    """Bundled, else cached, else downloaded weights; None when the registry has no direct download."""
    bundled = bundled_weights(spec)
    if bundled is not None:
        return bundled
    cached = cached_weights(spec)
    if cached is not None:
        return cached.path
    if spec.download_url is None:
        return None
    if downloads_disabled(offline):
        raise OfflineError(offline_message(spec))
    return download_weights(spec, notice=notice).path


def require_weights(spec: ModelSpec, offline: bool = False, notice: Notice = print_notice) -> Path:
    """:func:`resolve_weights`, or a one-line error saying how to get the file."""
    path = resolve_weights(spec, offline=offline, notice=notice)
    if path is None:
        raise WeightsError(missing_weights_message(spec))
    return path


def download_weights(
    spec: ModelSpec,
    url: str | None = None,
    sha256: str | None = None,
    notice: Notice = print_notice,
    progress: bool = True,
) -> CachedWeights:
    """Fetch ``url`` (default: the registry's) into the cache unless a matching copy is there.

    Verified against ``sha256`` or the registry's digest when either is known; otherwise the
    digest is recorded in the manifest and printed. Holds the model's lock throughout.
    """
    source = url or spec.download_url
    if source is None:
        raise WeightsError(
            f"{spec.name} has no direct download: get {spec.checkpoint_file or 'the weights'} from "
            f"{spec.source_url or 'its authors'} and run 'sammed models download {spec.name} --url URL'"
        )
    expected = normalise_sha256(sha256) or normalise_sha256(spec.sha256)
    file_name = spec.checkpoint_file or Path(urlparse(source).path).name or f"{spec.name}.pth"
    folder = model_dir(spec)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache {folder}: {exc.strerror or exc}") from exc
    from filelock import FileLock

    with FileLock(str(folder / _LOCK)):
        cached = cached_weights(spec)  # another process may have finished while we waited
        if cached is not None and (url is None or cached.url == url) and expected in (None, cached.sha256):
            return cached
        for stale in folder.glob(f"*{PARTIAL_SUFFIX}"):  # left by a killed download; we hold the lock
            stale.unlink(missing_ok=True)
        notice(
            f"downloading {spec.name}: {file_name} ({_size_text(source)}, licence {spec.license or 'not stated'}) "
            f"from {source}"
        )
        entry = _fetch(source, folder, file_name, expected, progress)
    if not entry.verified:
        notice(f"no published sha256 for {spec.name}: recorded {entry.sha256} in {folder / MANIFEST}")
    return entry


def _fetch(url: str, folder: Path, file_name: str, expected: str | None, progress: bool) -> CachedWeights:
    """Stream into a temporary file beside the target, verify, record, then rename atomically."""
    import pooch
    import requests

    handle, partial_name = tempfile.mkstemp(prefix=f"{file_name}.", suffix=PARTIAL_SUFFIX, dir=folder)
    os.close(handle)
    partial = Path(partial_name)
    bar = _progress_bar() if progress else False
    try:
        downloader = pooch.HTTPDownloader(progressbar=bar, chunk_size=_CHUNK, timeout=_TIMEOUT_S)
        try:
            downloader(url, partial_name, None)
        except requests.exceptions.ChunkedEncodingError as exc:
            raise WeightsError(f"cannot download {url}: the connection broke off before the whole file arrived "
                               "(nothing was kept; run the command again)") from exc
        except requests.RequestException as exc:
            raise WeightsError(f"cannot download {url}: {_first_line(exc)} (nothing was kept)") from exc
        except OSError as exc:
            raise WeightsError(f"cannot write {partial}: {exc.strerror or exc} (nothing was kept)") from exc
        size = partial.stat().st_size
        if size == 0:
            raise WeightsError(f"{url} sent an empty file (nothing was kept)")
        digest = file_sha256(partial)
        if expected is not None and digest != expected:
            raise WeightsError(
                f"{file_name} from {url} has sha256 {digest}, expected {expected}: refused, nothing was kept"
            )
        entry = CachedWeights(folder / file_name, url, digest, size, expected is not None)
        _write_manifest(folder, entry)
        os.replace(partial, entry.path)
    finally:
        partial.unlink(missing_ok=True)
        if bar:
            bar.close()  # pooch closes it only on success; an error message then starts on its own line
    return entry


def _progress_bar():
    """A byte-counting tqdm bar on stderr (pooch fills in the total from Content-Length)."""
    from tqdm import tqdm

    class Bar(tqdm):
        def __bool__(self) -> bool:  # tqdm is falsy while its total is 0, and pooch tests truthiness
            return True

    return Bar(total=0, ncols=79, unit="B", unit_scale=True, leave=True, file=sys.stderr)


def _write_manifest(folder: Path, entry: CachedWeights) -> None:
    record = {**asdict(entry), "file": entry.path.name, "downloaded": datetime.now(timezone.utc).isoformat()}
    del record["path"]
    from sammed.io.atomic import write_text_atomic  # here: sammed.io pulls SimpleITK, listing models must not

    write_text_atomic(folder / MANIFEST, json.dumps(record, indent=2))


def _size_text(url: str) -> str:
    """The remote file's size from a HEAD request (Hugging Face reports it as X-Linked-Size)."""
    import requests

    try:
        response = requests.head(url, allow_redirects=True, timeout=10)
    except requests.RequestException:
        return "size unknown"
    sizes = [answer.headers.get("x-linked-size", "") for answer in (*response.history, response)]
    if response.ok:
        sizes.append(response.headers.get("content-length", ""))
    for value in sizes:
        if value.isdigit() and int(value) > 0:
            return f"{int(value) / 1e6:.1f} MB"
    return "size unknown"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
