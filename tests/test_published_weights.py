"""Published ImageNet weights by name (`pretrain.weights=IMAGENET1K_V1`), offline: a local HTTP server on
127.0.0.1 stands in for download.pytorch.org and serves a small random-weight torchvision state dict
(as `.safetensors`: the download path does not read the file, and reading `.pth` needs torch)."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch_fixtures as tf
from flax import nnx
from safetensors.numpy import save_file

from shiftbench.infra.errors import CacheError, ConfigError
from shiftbench.models import VGG, torchvision_weights
from shiftbench.models import published_weights as pw

ROOT = Path(__file__).resolve().parent.parent
WIDTH = tf.VGG11_SMALL["width"]


class Server:
  """Serves the files of `root` and counts the GETs per path; `delay` seconds before each answer."""

  def __init__(self, root: Path, delay: float = 0.0):
    self.hits: dict[str, int] = {}
    outer = self

    class Handler(http.server.SimpleHTTPRequestHandler):
      def __init__(self, *a, **kw):
        super().__init__(*a, directory=str(root), **kw)

      def do_GET(self):  # noqa: N802 (http.server's name)
        outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
        time.sleep(delay)
        super().do_GET()

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.httpd.server_port}/models"
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


def _published(tmp_path: Path) -> tuple[Path, str]:
  """A random-weight vgg11 state dict at 1/16 width, saved as `models/vgg11-<sha256 prefix>.safetensors`."""
  models = tmp_path / "site" / "models"
  models.mkdir(parents=True)
  raw = models / "raw.safetensors"
  save_file(tf.state_dict("vgg11_small"), str(raw))
  file = f"vgg11-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.safetensors"
  raw.rename(models / file)
  return models / file, file


@pytest.fixture
def site(tmp_path):
  path, file = _published(tmp_path)
  server = Server(tmp_path / "site", delay=0.5)
  yield server, path, file
  server.close()


def test_a_name_resolves_per_architecture_to_torchvisions_file():
  assert pw.is_name("IMAGENET1K_V1") and not pw.is_name("/w/vgg16.pth") and not pw.is_name("vgg16.pth")
  assert pw.filename("vgg16", "IMAGENET1K_V1") == "vgg16-397923af.pth"
  assert pw.filename("resnet18_tv", "IMAGENET1K_V1") == "resnet18-f37072fd.pth"
  assert pw.url("vgg16-397923af.pth", pw.BASE_URL) == "https://download.pytorch.org/models/vgg16-397923af.pth"
  assert pw.hash_prefix("densenet121-a639ec97.pth") == "a639ec97"
  with pytest.raises(ConfigError, match="no published weights 'IMAGENET1K_V9' for 'vgg16'.*vgg16: IMAGENET1K_V1"):
    pw.filename("vgg16", "IMAGENET1K_V9")


def test_downloaded_once_verified_and_fetched_again_when_the_cached_copy_is_damaged(site, tmp_path):
  server, served, file = site
  cache = tmp_path / "cache" / "weights"
  first = pw.fetch(file, cache, base_url=server.url)
  assert first == cache / file and first.read_bytes() == served.read_bytes()
  assert pw.fetch(file, cache, base_url=server.url) == first
  assert server.hits == {f"/models/{file}": 1}  # the second call found the verified copy
  assert sorted(p.name for p in cache.iterdir()) == [file]  # no temporary files left
  first.write_bytes(b"truncated")  # a damaged copy is checked on use and replaced
  assert pw.fetch(file, cache, base_url=server.url).read_bytes() == served.read_bytes()
  assert server.hits == {f"/models/{file}": 2}


def test_a_download_whose_sha256_does_not_match_its_name_is_refused_and_nothing_is_published(site, tmp_path):
  server, served, _ = site
  wrong = "vgg11-00000000.pth"
  served.rename(served.with_name(wrong))
  cache = tmp_path / "cache" / "weights"
  with pytest.raises(CacheError, match=r"does not start with 00000000 .*refused, nothing cached"):
    pw.fetch(wrong, cache, base_url=server.url)
  assert list(cache.iterdir()) == []


def test_no_network_is_a_one_line_error_naming_the_url_and_the_manual_copy(tmp_path):
  with pytest.raises(CacheError) as err:
    pw.fetch("vgg16-397923af.pth", tmp_path / "weights", base_url="http://127.0.0.1:9/models", timeout_s=5)
  message = str(err.value)
  assert "\n" not in message and "cannot download http://127.0.0.1:9/models/vgg16-397923af.pth" in message
  assert f"copy it to {tmp_path / 'weights' / 'vgg16-397923af.pth'}" in message and "docs/paper.md" in message
  assert list((tmp_path / "weights").iterdir()) == []


def test_concurrent_callers_download_once(site, tmp_path):
  server, served, file = site
  cache = tmp_path / "cache" / "weights"
  code = "import sys; from shiftbench.models import published_weights as pw; print(pw.fetch(sys.argv[1], sys.argv[2]))"
  env = {**os.environ, "PYTHONPATH": str(ROOT), pw.BASE_URL_ENV: server.url}
  procs = [
    subprocess.Popen([sys.executable, "-c", code, file, str(cache)], env=env, stdout=subprocess.PIPE, text=True)
    for _ in range(3)
  ]
  outs = [p.communicate(timeout=120)[0].strip() for p in procs]
  assert [p.returncode for p in procs] == [0, 0, 0]
  assert outs == [str(cache / file)] * 3
  assert server.hits == {f"/models/{file}": 1}
  assert (cache / file).read_bytes() == served.read_bytes()


def test_a_named_setting_loads_the_downloaded_file_and_the_row_records_its_source(site, tmp_path, monkeypatch):
  server, served, file = site
  monkeypatch.setitem(pw.PUBLISHED, "vgg11", {"IMAGENET1K_V1": file})
  monkeypatch.setenv(pw.BASE_URL_ENV, server.url)
  cache = tmp_path / "cache" / "weights"
  torchvision_weights.check_weights("IMAGENET1K_V1", "vgg11", lambda: "vgg11")  # nothing downloaded yet
  assert server.hits == {}
  model = VGG(num_classes=3, depth=11, width=WIDTH, canvas_size=32, rngs=nnx.Rngs(0))
  path, source = torchvision_weights.weights_for({"vgg11": "IMAGENET1K_V1"}, "vgg11", model.arch, cache)
  record = torchvision_weights.load_imagenet(model, path, source)
  assert record == {
    "path": str(cache / file),
    "sha256": hashlib.sha256(served.read_bytes()).hexdigest(),
    "arch": "vgg11",
    "source": "torchvision IMAGENET1K_V1",
    "url": f"{server.url}/{file}",
  }
  with pytest.raises(ConfigError, match="no published weights 'IMAGENET1K_V1' for 'densenet121'"):
    monkeypatch.setitem(pw.PUBLISHED, "densenet121", {})
    torchvision_weights.check_weights("IMAGENET1K_V1", "densenet121", lambda: "densenet121")
