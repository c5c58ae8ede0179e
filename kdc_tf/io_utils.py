"""File I/O that never leaves a half-written or unnamed failure: atomic writes, checked JSON reads.

`atomic_write_*` write to a temporary file in the destination's folder and rename it over the
destination (`os.replace`, atomic on POSIX within one file system), so a reader sees the old file
or the new one, never a partial one, and a crash leaves no truncated output. `load_json` names the
file when it is truncated or not JSON. `exclusive_output_dir` makes a second run into the same
output folder refuse clearly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from typing import Any, Iterator

_LOCK_FILE = ".kdc.lock"


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically (temp file in the same folder, then rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(temp, 0o644)
    os.replace(temp, path)
  except BaseException:
    if os.path.exists(temp):
      os.remove(temp)
    raise


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, value: Any, **dump_kwargs: Any) -> None:
  """Writes `value` as JSON to `path` atomically."""
  atomic_write_text(path, json.dumps(value, **dump_kwargs))


def load_json(path: str) -> Any:
  """Parses a JSON file; a truncated or invalid file is a ValueError naming it."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e}); truncated or not a JSON file?") from None
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not a UTF-8 JSON file ({e})") from None


class OutputDirBusyError(RuntimeError):
  """Another process is writing into the same output folder."""


@contextlib.contextmanager
def exclusive_output_dir(directory: str) -> Iterator[str]:
  """Holds an exclusive lock on `directory` (created) while the block writes into it.

  A second run into the same folder fails at once with OutputDirBusyError instead of silently
  mixing or overwriting the first run's files. The lock is an flock on `directory/.kdc.lock`: the
  system releases it when the process ends, so a killed run leaves no stale lock.
  """
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, _LOCK_FILE)
  with open(path, "a") as lock:
    try:
      fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise OutputDirBusyError(
          f"{directory} is in use by another run (lock {path} held); wait for it to finish or "
          "choose another output folder") from None
    try:
      yield directory
    finally:
      fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
