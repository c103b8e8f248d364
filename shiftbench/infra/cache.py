"""One way to share a cache entry between jobs: build it once under a lock, verify it, publish it by rename.

An entry is a file or a directory at a path of its own (a pretrained checkpoint, a rendered glyph set, a
downloaded weights file). `obtain` gives its verified content:

1. If the entry is there and passes `verify`, it is used, without any lock: the common case costs one
   check and never waits.
2. Otherwise the entry's lock is taken (`lock_path`: `<cache>.locks/<name>.lock`, beside the cache so
   that the cache directory holds entries only). Under it the entry is checked again, because another job
   may have published it while this one waited; one that fails its check is moved aside (`move_aside`).
3. The entry is built into a private temporary directory beside its final place and published by a
   rename that never replaces what is there (`build_and_publish`): a directory rename fails on a
   non-empty target, and a file is published by `os.link`, which fails on an existing name.

So no job ever sees half an entry, overwrites another's, or deletes one in place. A job that waited
longer than its timeout builds the entry anyway; it publishes only if nothing is there yet and never
moves anything aside (that is for the holder of the lock).

Every cache lives under one root, `root()`: `$SHIFTBENCH_CACHE`, default `~/.cache/shiftbench` (the
config's `paths.*` defaults spell out the same rule).

Only the standard library, `filelock` (through `locks`) and `errors` are imported here.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Literal, TypeVar

from shiftbench.infra import locks
from shiftbench.infra.errors import CacheError

T = TypeVar("T")
How = Literal["found", "waited", "built", "built-after-timeout"]
# link(2) is not available on every filesystem (some FUSE and SMB mounts); these say so.
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


class Corrupt(CacheError):
  """An entry that is there but fails its check: `obtain` moves it aside and builds it again.

  `problem` is the message without `advice`, for the one log line that says the entry is being replaced.
  """

  corrupted = True

  def __init__(self, problem: str, advice: str = ""):
    super().__init__(f"{problem}; {advice}" if advice else problem)
    self.problem = problem


@dataclasses.dataclass(frozen=True)
class Kind:
  """What a cache holds, for its messages.

  Attributes:
    noun: what an entry is called ("checkpoint"), as in `cannot create the checkpoint lock directory`.
    making: how an entry is made, as a gerund ("pretraining"), as in `removing the checkpoint and
      pretraining it again`.
    log: the logger that speaks (the cache's module), so its lines carry the cache's name.
    hint: how to fix an unwritable cache, appended to the errors that say it cannot be written.
  """

  noun: str
  making: str
  log: logging.Logger
  hint: str = ""

  def unwritable(self, what: str, error: OSError) -> CacheError:
    """A one-line error: `what` failed because of `error`, and how to fix it."""
    detail = f"{what} ({error.strerror or error})"
    return CacheError(f"{detail}; {self.hint}" if self.hint else detail)


@dataclasses.dataclass(frozen=True)
class Obtained(Generic[T]):
  """What `obtain` returns.

  Attributes:
    value: what `verify` returned for a found entry, or `build` for one built here.
    how: `found` (there at once, no lock), `waited` (there once the lock was held: another job published
      it meanwhile), `built` (built here under the lock), `built-after-timeout` (built here without it).
    published: whether this call published the entry (False when found, or when another job's entry was
      there first).
  """

  value: T
  how: How
  published: bool


def root() -> Path:
  """The one directory that everything shiftbench caches goes under, unless the user names another place:
  `$SHIFTBENCH_CACHE`, default `~/.cache/shiftbench` (absolute: Hydra may change the working directory)."""
  where = os.environ.get("SHIFTBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "shiftbench")
  return Path(where).expanduser().absolute()


def lock_path(path: Path) -> Path:
  """The lock file of entry `path`: `<cache>.locks/<name>.lock`, beside the cache directory `<cache>`."""
  path = Path(path)
  return path.parent.with_name(path.parent.name + ".locks") / f"{path.name}.lock"


def _publish(built: Path, path: Path, locked: bool) -> bool:
  """Renames `built` to `path` unless something is there; True if it did."""
  if built.is_dir():
    try:
      os.rename(built, path)  # atomic; fails on a non-empty directory (or a file) instead of replacing it
      return True
    except OSError as e:
      if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
        return False
      raise
  try:
    os.link(built, path)  # atomic, and fails with EEXIST where `os.rename` would replace silently
    return True
  except FileExistsError:
    return False
  except OSError as e:
    if e.errno not in _NO_LINKS:
      raise
    if not locked:
      return False  # without hard links, checking then renaming is safe only under the entry's lock
  if os.path.lexists(path):
    return False
  os.rename(built, path)  # nothing there, and no other job may publish while we hold the lock
  return True


def build_and_publish(path: Path, build: Callable[[Path], T], kind: Kind, *, locked: bool = False) -> tuple[T, bool]:
  """Builds an entry into a private temporary directory beside `path` and publishes it by rename.

  Args:
    path: the entry's final place.
    build: makes the entry at the path it is given (a file or a directory, which does not exist yet;
      its parent is private to this call) and returns what the caller wants of it.
    kind: the cache's names, for errors.
    locked: whether the caller holds the entry's lock (`lock_path`); then a file can be published where
      the filesystem has no hard links.

  Returns:
    (what `build` returned, whether it was published). False when an entry was already there, which is
    kept, or for a file on a filesystem without hard links when the caller does not hold the lock. The
    temporary directory is removed either way, also when `build` raises.
  """
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
  except OSError as e:
    raise kind.unwritable(f"cannot write the {kind.noun} {path}", e) from e
  try:
    built = scratch / path.name  # made by `build` with the umask's mode; mkdtemp's own is 0700
    value = build(built)
    try:
      return value, _publish(built, path, locked)
    except OSError as e:
      raise CacheError(f"cannot publish the {kind.noun} {path} ({e.strerror or e})") from e
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def move_aside(path: Path, reason: CacheError) -> None:
  """Takes an entry that failed its check out of its place, then deletes it; only under the entry's lock.

  The rename comes first and is atomic, so a new entry can be published at once and no job finds a
  half-deleted one: a job that had already opened its files keeps reading them (an open file outlives
  its name), one that opens them after the rename finds nothing and takes the lock itself.
  """
  aside = path.with_name(f".{path.name}.bad-{os.getpid()}-{time.time_ns()}")
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return
  except OSError as e:
    raise CacheError(f"{reason} (and moving it away failed: {e.strerror or e})") from e
  if aside.is_dir() and not aside.is_symlink():
    shutil.rmtree(aside, ignore_errors=True)
  else:
    aside.unlink(missing_ok=True)


def obtain(
  path: Path,
  build: Callable[[Path, bool], T],
  verify: Callable[[Path], T],
  *,
  kind: Kind,
  label: str,
  lock_timeout: float = -1.0,
  cleanup: Callable[[], None] | None = None,
) -> Obtained[T]:
  """The verified entry at `path`: found there, waited for, or built here and published (module docstring).

  Args:
    path: the entry's place in its cache directory.
    build: makes the entry at the path it is given (see `build_and_publish`); its second argument says
      whether this job holds the entry's lock (False after a timeout: it must not touch what the holder
      may be writing, such as resumable state of its own).
    verify: checks the entry at the path it is given and returns its content; raises `Corrupt` for an
      entry that is there but bad. Any other exception is passed on (an intact entry of something else is
      the caller's error to report, never a reason to delete it).
    kind: the cache's names, for messages.
    label: names the entry in the log lines about waiting.
    lock_timeout: how long to wait for another job building the same entry before building it here too
      (< 0: as long as it takes).
    cleanup: called under the lock after an entry was built there (published or not), e.g. to remove
      scratch files that only the lock's holder uses.

  Returns:
    The entry's content and how it was obtained (`Obtained`).
  """
  path = Path(path)
  if os.path.lexists(path):
    try:
      return Obtained(verify(path), "found", False)
    except Corrupt:
      pass  # acted on under the lock: another job may be replacing it already
  lock = lock_path(path)
  try:
    lock.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise kind.unwritable(f"cannot create the {kind.noun} lock directory {lock.parent}", e) from e
  start = time.perf_counter()
  if not locks.is_free(lock):
    up_to = "" if lock_timeout < 0 else f" (up to {lock_timeout:.0f} s)"
    kind.log.info("%s: waiting for %s, which is %s it%s", label, locks.owner_text(lock), kind.making, up_to)
  with locks.held(lock, lock_timeout) as locked:
    if not locked:
      kind.log.warning(
        "%s: gave up waiting after %.0f s for %s; %s it here as well",
        label,
        time.perf_counter() - start,
        locks.owner_text(lock),
        kind.making,
      )
    elif os.path.lexists(path):
      try:
        return Obtained(verify(path), "waited", False)
      except Corrupt as e:
        kind.log.warning("%s: removing the %s and %s it again", e.problem, kind.noun, kind.making)
        move_aside(path, e)
    value, published = build_and_publish(path, lambda target: build(target, locked), kind, locked=locked)
    if locked and cleanup is not None:
      cleanup()
  return Obtained(value, "built" if locked else "built-after-timeout", published)
