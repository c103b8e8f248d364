"""`cache.obtain`, the one primitive behind the checkpoint, glyph and weights caches: built once under the
entry's lock, found by later callers, a corrupt entry moved aside and rebuilt, never an entry replaced.
Plain files and directories, no JAX."""

import errno
import fcntl
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shiftbench.infra import cache
from shiftbench.infra.errors import CacheError

ROOT = Path(__file__).resolve().parent.parent
KIND = cache.Kind(noun="entry", making="building", log=logging.getLogger("shiftbench.test_cache"), hint="fix it")


def _verify(path: Path) -> str:
  """A file entry's text, or its first line for a directory entry; `ok:` marks a good one."""
  text = (path / "data").read_text() if path.is_dir() else path.read_text()
  if not text.startswith("ok:"):
    raise cache.Corrupt(f"{path} is corrupt")
  return text


def _build(text: str, as_dir: bool = False, calls: list | None = None):
  def build(target: Path, locked: bool) -> str:
    if calls is not None:
      calls.append(locked)
    if as_dir:
      target.mkdir()
      (target / "data").write_text(text)
    else:
      target.write_text(text)
    return text

  return build


def _hold(lock_file: Path) -> int:
  """Takes a lock the way another process would: flock on a descriptor of our own."""
  lock_file.parent.mkdir(parents=True, exist_ok=True)
  fd = os.open(lock_file, os.O_RDWR | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX)
  return fd


def test_a_missing_entry_is_built_once_under_its_lock_then_found(tmp_path):
  path, calls, cleaned = tmp_path / "c" / "e", [], []
  first = cache.obtain(
    path, _build("ok:1", calls=calls), _verify, kind=KIND, label="e", cleanup=lambda: cleaned.append(1)
  )
  assert (first.value, first.how, first.published, calls, cleaned) == ("ok:1", "built", True, [True], [1])
  again = cache.obtain(path, _build("ok:2"), _verify, kind=KIND, label="e")
  assert (again.value, again.how, again.published) == ("ok:1", "found", False)
  assert [p.name for p in path.parent.iterdir()] == ["e"]  # no temporary directory left, no lock inside
  assert cache.lock_path(path) == tmp_path / "c.locks" / "e.lock" and cache.lock_path(path).is_file()
  assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # the usual mode, not mkdtemp's 0700


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


@pytest.mark.parametrize("as_dir", [False, True], ids=["file", "directory"])
def test_a_corrupt_entry_is_moved_aside_and_rebuilt_and_a_reader_keeps_its_bytes(tmp_path, caplog, as_dir):
  path = tmp_path / "c" / "e"
  cache.obtain(path, _build("bad", as_dir), lambda p: "unchecked", kind=KIND, label="e")
  with open(path / "data" if as_dir else path) as reader:  # another job reading the bad entry
    with caplog.at_level(logging.WARNING, logger="shiftbench.test_cache"):
      got = cache.obtain(path, _build("ok:new", as_dir), _verify, kind=KIND, label="e")
    assert reader.read() == "bad"  # moved aside by rename: an open file outlives its name
  assert (got.value, got.how, got.published) == ("ok:new", "built", True)
  assert f"{path} is corrupt: removing the entry and building it again" in caplog.text
  assert [p.name for p in path.parent.iterdir()] == ["e"] and _verify(path) == "ok:new"


def test_an_error_other_than_corrupt_is_passed_on_and_the_entry_kept(tmp_path):
  path = tmp_path / "e"
  path.write_text("another model's")

  def refuse(p: Path) -> str:
    raise CacheError(f"{p} holds something else")

  with pytest.raises(CacheError, match="holds something else"):
    cache.obtain(path, _build("ok:1"), refuse, kind=KIND, label="e")
  assert path.read_text() == "another model's"


def test_a_job_that_times_out_builds_anyway_and_leaves_the_entry_to_the_lock_holder(tmp_path, caplog):
  path, calls, cleaned = tmp_path / "c" / "e", [], []
  path.parent.mkdir()
  path.write_text("bad")
  fd = _hold(cache.lock_path(path))
  try:
    with caplog.at_level(logging.INFO, logger="shiftbench.test_cache"):
      got = cache.obtain(
        path,
        _build("ok:mine", calls=calls),
        _verify,
        kind=KIND,
        label="e",
        lock_timeout=0.2,
        cleanup=lambda: cleaned.append(1),
      )
  finally:
    os.close(fd)
  assert (got.value, got.how, got.published, calls, cleaned) == ("ok:mine", "built-after-timeout", False, [False], [])
  assert path.read_text() == "bad" and [p.name for p in path.parent.iterdir()] == ["e"]
  assert "e: waiting for another process, which is building it (up to 0 s)" in caplog.text
  assert "gave up waiting after 0 s for another process; building it here as well" in caplog.text


@pytest.mark.parametrize("as_dir", [False, True], ids=["file", "directory"])
def test_publishing_never_replaces_an_existing_entry(tmp_path, as_dir):
  path = tmp_path / "e"
  assert cache.build_and_publish(path, lambda t: _build("ok:first", as_dir)(t, True), KIND) == ("ok:first", True)
  assert cache.build_and_publish(path, lambda t: _build("ok:second", as_dir)(t, True), KIND) == ("ok:second", False)
  assert _verify(path) == "ok:first" and [p.name for p in tmp_path.iterdir()] == ["e"]


def test_without_hard_links_a_file_is_published_only_under_the_lock_and_only_onto_nothing(tmp_path, monkeypatch):
  def no_link(src, dst):
    raise OSError(errno.EPERM, "Operation not permitted")

  monkeypatch.setattr(cache.os, "link", no_link)
  write = lambda text: lambda t: t.write_text(text)
  assert cache.build_and_publish(tmp_path / "a", write("ok:a"), KIND)[1] is False  # no lock: not published
  assert cache.build_and_publish(tmp_path / "b", write("ok:b"), KIND, locked=True)[1] is True
  assert cache.build_and_publish(tmp_path / "b", write("ok:c"), KIND, locked=True)[1] is False
  assert [p.name for p in tmp_path.iterdir()] == ["b"] and (tmp_path / "b").read_text() == "ok:b"


def test_an_unwritable_cache_is_a_one_line_error_with_the_hint(tmp_path):
  (tmp_path / "c.locks").write_text("a file where the lock directory goes")
  with pytest.raises(CacheError, match=r"cannot create the entry lock directory .*c\.locks \(.*\); fix it"):
    cache.obtain(tmp_path / "c" / "e", _build("ok:1"), _verify, kind=KIND, label="e")
  (tmp_path / "d").write_text("a file where the cache directory goes")
  with pytest.raises(CacheError, match=r"cannot write the entry .*d/e \(.*\); fix it"):
    cache.build_and_publish(tmp_path / "d" / "e", lambda t: t.write_text("ok:1"), KIND)


# Jobs that start together: each asks for the entry once all are ready; building takes long enough for a race.
WORKER = textwrap.dedent("""
  import json, logging, os, sys, time
  from pathlib import Path
  from shiftbench.infra import cache
  path, ready, jobs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
  kind = cache.Kind(noun="entry", making="building", log=logging.getLogger("w"))
  def build(target, locked):
    time.sleep(1.0)
    target.write_text(f"ok:{os.getpid()}")
    return target.read_text()
  (ready / str(os.getpid())).touch()
  while len(list(ready.iterdir())) < jobs:
    time.sleep(0.01)
  got = cache.obtain(path, build, lambda p: p.read_text(), kind=kind, label="e")
  print(json.dumps({"how": got.how, "value": got.value}))
""")


def test_jobs_that_start_together_build_once_and_the_others_wait_and_reuse_it(tmp_path, jobs=3):
  path, ready = tmp_path / "c" / "e", tmp_path / "ready"
  ready.mkdir()
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  procs = [
    subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(ready), str(jobs)], stdout=subprocess.PIPE, env=env)
    for _ in range(jobs)
  ]
  outs = [p.communicate(timeout=60)[0] for p in procs]
  assert [p.returncode for p in procs] == [0] * jobs
  results = [json.loads(out) for out in outs]
  assert sorted(r["how"] for r in results) == ["built"] + ["waited"] * (jobs - 1)
  assert {r["value"] for r in results} == {path.read_text()}
  assert [p.name for p in path.parent.iterdir()] == ["e"]
