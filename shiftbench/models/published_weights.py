"""torchvision's published ImageNet weights by name (`pretrain.weights=IMAGENET1K_V1`), downloaded once.

A name resolves per architecture to the file torchvision publishes at https://download.pytorch.org/models/.
The hex digits after the last `-` of its name are the start of the file's sha256 (torch.hub's convention),
so a download is checked against them before it is published, and a cached copy every time it is used.

The cache is `<cache>/weights/` beside `paths.checkpoint_dir` (`<cache>/checkpoints`), shared like the
checkpoints (`cache.obtain`): one process downloads under a lock (lock files in `weights.locks/`) into a
private temporary file and publishes it by a link that never replaces a file, and the others wait and
read it. A copy that fails its check is moved aside, under the lock, and downloaded again.
No network: the error names the URL and where to copy the file (docs/paper.md, "offline cluster").

The standard library (urllib) and the cache layer (`cache`, `hashing`): nothing of jax or torch is imported here.
"""

from __future__ import annotations

import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from shiftbench.infra import cache, hashing
from shiftbench.infra.errors import CacheError, ConfigError

log = logging.getLogger(__name__)
_KIND = cache.Kind(
  noun="weights file",
  making="downloading",
  log=log,
  hint="make paths.checkpoint_dir (or $SHIFTBENCH_CACHE) a writable directory",
)

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


def _verified(path: Path) -> Path:
  """`path` if its sha256 starts with its name's prefix (a cached copy is checked every use), else a
  `cache.Corrupt`."""
  want = hash_prefix(path.name)
  try:
    if hashing.sha256_file(path).startswith(want):
      return path
    problem = f"{path}: its sha256 does not start with {want} (truncated or altered)"
  except OSError as e:
    problem = f"{path} cannot be read ({e.strerror or e})"
  raise cache.Corrupt(problem)


def _manual(link: str, target: Path) -> str:
  return (
    f"download {link} on a machine with network (docs/paper.md, 'Getting the weights onto an offline cluster') "
    f"and copy it to {target}, or pass pretrain.weights=/path/to/{target.name}"
  )


def _download(link: str, tmp: Path, target: Path, timeout_s: float) -> Path:
  """Streams `link` into `tmp` (a private temporary place) and checks its sha256 against `target`'s name;
  any failure is a `CacheError` (and `cache.obtain` publishes nothing)."""
  start = time.perf_counter()
  try:
    with tmp.open("wb") as out, urllib.request.urlopen(link, timeout=timeout_s) as response:
      for block in iter(lambda: response.read(CHUNK), b""):
        out.write(block)
  except (urllib.error.URLError, OSError) as e:  # no network, HTTP errors, timeouts, a dropped connection
    reason = getattr(e, "reason", None) or e
    raise CacheError(f"cannot download {link} ({reason}); {_manual(link, target)}") from e
  digest, want = hashing.sha256_file(tmp), hash_prefix(target.name)
  if not digest.startswith(want):
    raise CacheError(
      f"downloaded {link}, but its sha256 {digest[:16]}... does not start with {want} (its name's "
      f"prefix): refused, nothing cached; {_manual(link, target)}"
    )
  log.info("weights %s: downloaded %s in %.1f s", target.name, link, time.perf_counter() - start)
  return target


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
  link = url(file, base_url)
  download = lambda tmp, locked: _download(link, tmp, target, timeout_s)
  return cache.obtain(target, download, _verified, kind=_KIND, label=f"weights {file}").value
