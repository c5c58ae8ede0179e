"""Which training precision this machine runs fastest: bfloat16 where it is native.

bfloat16 compute with float32 weights (`mixed_bfloat16`) needs no loss scaling and halves the
convolutions' memory traffic, but only hardware with native bfloat16 arithmetic gains from it:
GPUs of compute capability >= 8.0, and CPUs with AVX512_BF16 or AMX-BF16 (oneDNN's bfloat16
kernels) unless oneDNN is capped below them (ONEDNN_MAX_CPU_ISA). Elsewhere it is emulated, slower
than float32, and a capped oneDNN (AVX2) aborts in the bfloat16 graph. Measurements: docs/learning.md,
'bfloat16 training on the CPU'.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterable, Iterator, Optional

import keras

import tensorflow as tf
from absl import logging

_NATIVE_BFLOAT16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# oneDNN's instruction-set caps that keep its bfloat16 kernels.
_BFLOAT16_ISA_CAPS = ("ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                      "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX",
                      "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2")
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


def with_loss_scaling(optimizer: keras.optimizers.Optimizer,
                      precision: str) -> keras.optimizers.Optimizer:
  """`optimizer` with dynamic loss scaling under mixed_float16 (float16's range needs it;
  float32 and bfloat16 do not), else unchanged."""
  if precision == "mixed_float16":
    return keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


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


def has_native_bfloat16(flags: Iterable[str], gpu_capabilities: Iterable[tuple],
                        onednn_isa_cap: Optional[str] = None) -> bool:
  """True if every GPU has compute capability >= 8.0, or (without GPUs) the CPU has bfloat16
  flags and oneDNN is not capped below its bfloat16 kernels."""
  capabilities = list(gpu_capabilities)
  if capabilities:
    return all(capability >= (8, 0) for capability in capabilities)
  if onednn_isa_cap and onednn_isa_cap.upper() not in _BFLOAT16_ISA_CAPS:
    return False
  return bool(_NATIVE_BFLOAT16_CPU_FLAGS & set(flags))


def fastest_precision() -> str:
  """'mixed_bfloat16' on hardware with native bfloat16 arithmetic, else 'float32'."""
  capabilities = []
  for gpu in tf.config.list_physical_devices("GPU"):
    capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
    capabilities.append(tuple(capability) if capability else (0, 0))
  isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
  native = has_native_bfloat16(cpu_flags(), capabilities, isa_cap)
  precision = "mixed_bfloat16" if native else "float32"
  logging.info("Training precision %s (%s)", precision,
               "native bfloat16 arithmetic" if native else "no native bfloat16 arithmetic")
  return precision
