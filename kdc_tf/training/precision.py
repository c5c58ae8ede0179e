"""Which training precision this machine runs fastest: bfloat16 where it is native.

bfloat16 compute with float32 weights (`mixed_bfloat16`) needs no loss scaling and halves the
convolutions' memory traffic, but only hardware with native bfloat16 arithmetic gains from it:
GPUs of compute capability >= 8.0, and CPUs with AVX512_BF16 or AMX-BF16 (oneDNN's bfloat16
kernels). Elsewhere it is emulated and slower than float32. Measurements: docs/learning.md,
'bfloat16 training on the CPU'.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import keras

import tensorflow as tf
from absl import logging

_NATIVE_BFLOAT16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_CPUINFO = "/proc/cpuinfo"


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
  """Builds layers under the Keras dtype policy `name`, then restores the global policy."""
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


def cpu_flags(cpuinfo_path: str = _CPUINFO) -> frozenset:
  """The instruction-set flags of the first CPU in /proc/cpuinfo (empty where unreadable)."""
  try:
    with open(cpuinfo_path, encoding="utf-8", errors="replace") as cpuinfo:
      for line in cpuinfo:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
          return frozenset(value.split())
  except OSError:
    pass
  return frozenset()


def has_native_bfloat16(flags: Iterable[str], gpu_capabilities: Iterable[tuple]) -> bool:
  """True if a GPU has compute capability >= 8.0, or (without GPUs) the CPU has bf16 flags."""
  capabilities = list(gpu_capabilities)
  if capabilities:
    return all(capability >= (8, 0) for capability in capabilities)
  return bool(_NATIVE_BFLOAT16_CPU_FLAGS & set(flags))


def fastest_precision() -> str:
  """'mixed_bfloat16' on hardware with native bfloat16 arithmetic, else 'float32'."""
  capabilities = []
  for gpu in tf.config.list_physical_devices("GPU"):
    capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
    capabilities.append(tuple(capability) if capability else (0, 0))
  native = has_native_bfloat16(cpu_flags(), capabilities)
  precision = "mixed_bfloat16" if native else "float32"
  logging.info("Training precision %s (%s)", precision,
               "native bfloat16 arithmetic" if native else "no native bfloat16 arithmetic")
  return precision
