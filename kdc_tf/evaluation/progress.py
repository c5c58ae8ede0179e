"""Progress of a long per-image loop: done / total, rate and time left, logged now and then."""

from __future__ import annotations

import time

from absl import logging


class Progress:
  """Logs `description: done/total (rate, ETA)` at most every `interval_seconds` and at the end."""

  def __init__(self, total: int, description: str, interval_seconds: float = 10.0):
    self._total = total
    self._description = description
    self._interval = interval_seconds
    self._done = 0
    self._start = self._last_log = time.monotonic()

  def update(self, count: int = 1) -> None:
    self._done += count
    now = time.monotonic()
    if now - self._last_log >= self._interval or self._done == self._total:
      self._last_log = now
      elapsed = max(now - self._start, 1e-9)
      rate = self._done / elapsed
      eta = (self._total - self._done) / rate if rate > 0 else float("inf")
      logging.info("%s: %d/%d images (%.2f images/s, %.0f s elapsed, ~%.0f s left)",
                   self._description, self._done, self._total, rate, elapsed, eta)

  @property
  def elapsed_seconds(self) -> float:
    return time.monotonic() - self._start
