"""Choice of the training precision from the hardware's bfloat16 support."""

from kdc_tf.training import precision


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\n"
                     "flags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
  assert precision.cpu_flags(str(cpuinfo)) == {"fpu", "sse", "avx512f", "avx512_bf16"}
  assert precision.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_bfloat16_only_where_native():
  assert precision.has_native_bfloat16({"avx512f", "avx512_bf16"}, [])
  assert precision.has_native_bfloat16({"amx_bf16"}, [])
  assert not precision.has_native_bfloat16({"avx512f", "avx2"}, [])
  # oneDNN capped below its bfloat16 kernels (it aborts in the bfloat16 graph at AVX2).
  assert not precision.has_native_bfloat16({"avx512_bf16"}, [], "AVX2")
  assert precision.has_native_bfloat16({"avx512_bf16"}, [], "avx512_core_bf16")
  # With GPUs, the GPUs decide: every one must be Ampere (8.0) or newer.
  assert precision.has_native_bfloat16(set(), [(8, 0), (9, 0)])
  assert not precision.has_native_bfloat16({"avx512_bf16"}, [(7, 5)])
  assert not precision.has_native_bfloat16(set(), [(8, 6), (7, 0)])


def test_fastest_precision_follows_the_cpu_flags_without_gpus(monkeypatch):
  monkeypatch.setattr(precision.tf.config, "list_physical_devices", lambda kind: [])
  monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
  monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
  monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
  assert precision.fastest_precision() == "mixed_bfloat16"
  monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
  assert precision.fastest_precision() == "float32"
  monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
  monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f"}))
  assert precision.fastest_precision() == "float32"
