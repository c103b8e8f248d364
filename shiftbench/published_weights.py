"""torchvision's published ImageNet weights by name (`pretrain.weights=IMAGENET1K_V1`), downloaded once.

A name resolves per architecture to the file torchvision publishes at https://download.pytorch.org/models/.
The hex digits after the last `-` of its name are the start of the file's sha256 (torch.hub's convention),
so a download is checked against them before it is published, and a cached copy every time it is used.

The cache is `<cache>/weights/` beside `paths.checkpoint_dir` (`<cache>/checkpoints`), shared like the
checkpoints: one process downloads under a lock (`locks.held`, lock files in `weights.locks/`) into a
private temporary file and renames it into place (`os.replace`), and the others wait and read the file.
No network: the error names the URL and where to copy the file (docs/paper.md, "offline cluster").

Only the standard library (urllib): nothing of jax or torch is imported here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from shiftbench import locks
from shiftbench.errors import CacheError, ConfigError

log = logging.getLogger(__name__)

BASE_URL = "https://download.pytorch.org/models/"
# A mirror (or, in the tests, a local server) instead of BASE_URL.
BASE_URL_ENV = "SHIFTBENCH_WEIGHTS_URL"
# torchvision's published weights, architecture (a key of `torchvision_weights.ARCHS`) -> name -> file.
PUBLISHED: dict[str, dict[str, str]] = {
  "vgg11": {"IMAGENET1K_V1": "vgg11-8a719046.pth"},
  "vgg16": {"IMAGENET1K_V1": "vgg16-397923af.pth"},
  "vgg16_bn": {"IMAGENET1K_V1": "vgg16_bn-6c64b313.pth"},
  "resnet18_tv": {"IMAGENET1K_V1": "resnet18-f37072fd.pth"},
  "resnet50": {"IMAGENET1K_V1": "resnet50-0676ba61.pth", "IMAGENET1K_V2": "resnet50-11ad3fa6.pth"},
  "densenet121": {"IMAGENET1K_V1": "densenet121-a639ec97.pth"},
}
_NAME = re.compile(r"[A-Z][A-Z0-9_]*")  # a name, never a path: paths have a separator or an extension
_HASH = re.compile(r"-([0-9a-f]{8,})\.[A-Za-z]+$")
CHUNK = 1 << 20


def is_name(value: object) -> bool:
  """Whether a `pretrain.weights` value names published weights (`IMAGENET1K_V1`) rather than a file."""
  return isinstance(value, str) and _NAME.fullmatch(value) is not None


def filename(arch: str, name: str) -> str:
  """The published file of weights `name` for architecture `arch`; a config error names the known ones."""
  known = PUBLISHED.get(arch, {})
  if name not in known:
    have = ", ".join(f"{a}: {'/'.join(n)}" for a, n in PUBLISHED.items())
    raise ConfigError(f"no published weights {name!r} for {arch!r}; known names ({have}), or give a local file path")
  return known[name]


def url(file: str, base_url: str | None = None) -> str:
  base = base_url or os.environ.get(BASE_URL_ENV) or BASE_URL
  return base.rstrip("/") + "/" + file


def cache_dir(checkpoint_dir: str | Path) -> Path:
  """`weights/` beside the checkpoint cache: `$SHIFTBENCH_CACHE/weights` with the default paths."""
  return Path(checkpoint_dir).expanduser().absolute().parent / "weights"


def hash_prefix(file: str) -> str:
  match = _HASH.search(file)
  if match is None:
    raise ValueError(f"{file} carries no sha256 prefix (name-<hex>.pth)")
  return match.group(1)


def sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with path.open("rb") as fh:
    for block in iter(lambda: fh.read(CHUNK), b""):
      digest.update(block)
  return digest.hexdigest()


def _lock_path(path: Path) -> Path:
  """In `weights.locks/` beside the cache, as the checkpoint cache keeps its locks (`pretrained.lock_path`)."""
  return path.parent.with_name(path.parent.name + ".locks") / f"{path.name}.lock"


def _verified(path: Path) -> bool:
  """Whether `path` exists and its sha256 starts with its name's prefix (a cached copy is checked every use)."""
  if not path.is_file():
    return False
  if sha256(path).startswith(hash_prefix(path.name)):
    return True
  log.warning("%s: its sha256 does not start with %s (truncated or altered); downloading it again", path, path.name)
  return False


def _manual(link: str, target: Path) -> str:
  return (
    f"download {link} on a machine with network (docs/paper.md, 'Getting the weights onto an offline cluster') "
    f"and copy it to {target}, or pass pretrain.weights=/path/to/{target.name}"
  )


def _download(link: str, target: Path, timeout_s: float) -> None:
  """Streams `link` into a private temporary file beside `target`, checks its sha256 prefix and renames it
  into place; on any failure nothing is published and the temporary file is removed."""
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
  except OSError as e:
    raise CacheError(
      f"cannot write into the weights cache {target.parent} ({e.strerror or e}); make paths.checkpoint_dir "
      "(or $SHIFTBENCH_CACHE) a writable directory"
    ) from e
  tmp, digest, start = Path(tmp_name), hashlib.sha256(), time.perf_counter()
  try:
    with os.fdopen(fd, "wb") as out:
      try:
        with urllib.request.urlopen(link, timeout=timeout_s) as response:
          for block in iter(lambda: response.read(CHUNK), b""):
            digest.update(block)
            out.write(block)
      except (urllib.error.URLError, OSError) as e:  # no network, HTTP errors, timeouts, a dropped connection
        reason = getattr(e, "reason", None) or e
        raise CacheError(f"cannot download {link} ({reason}); {_manual(link, target)}") from e
    want = hash_prefix(target.name)
    if not digest.hexdigest().startswith(want):
      raise CacheError(
        f"downloaded {link}, but its sha256 {digest.hexdigest()[:16]}... does not start with {want} (its name's "
        f"prefix): refused, nothing cached; {_manual(link, target)}"
      )
    os.replace(tmp, target)
    log.info("weights %s: downloaded %s in %.1f s", target.name, link, time.perf_counter() - start)
  finally:
    with contextlib.suppress(FileNotFoundError):
      tmp.unlink()


def fetch(file: str, directory: str | Path, *, base_url: str | None = None, timeout_s: float = 60.0) -> Path:
  """The cached, verified copy of published file `file` in `directory`, downloaded first if needed.

  Args:
    file: a published file name with its sha256 prefix (`filename(arch, name)`).
    directory: the weights cache (`cache_dir`).
    base_url: where the file is published; None: $SHIFTBENCH_WEIGHTS_URL, else download.pytorch.org.
    timeout_s: network timeout of the download (per read).

  Returns:
    The file's path, which holds bytes whose sha256 starts with the name's prefix.
  """
  target = Path(directory).expanduser().absolute() / file
  if _verified(target):
    return target
  lock = _lock_path(target)
  try:
    lock.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise CacheError(f"cannot create the weights lock directory {lock.parent} ({e.strerror or e})") from e
  if not locks.is_free(lock):
    log.info("weights %s: waiting for %s, which is downloading it", file, locks.owner_text(lock))
  with locks.held(lock, -1):
    if not _verified(target):  # another process may have published it while this one waited
      _download(url(file, base_url), target, timeout_s)
  return target
