"""Whether a host answers, found out in bounded time: machines without network must fail fast, never hang
on a library's own minute-long retries (TFDS downloads, wandb online)."""

from __future__ import annotations

import socket
import threading


def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
  """Whether a TCP connection to `host` opens within `timeout` seconds (DNS lookup included)."""
  opened: list[bool] = []

  def probe() -> None:
    try:
      with socket.create_connection((host, port), timeout=timeout):
        opened.append(True)
    except OSError:
      opened.append(False)

  # A thread bounds the DNS lookup too, which ignores the socket timeout.
  thread = threading.Thread(target=probe, daemon=True)
  thread.start()
  thread.join(timeout)
  return bool(opened and opened[0])
