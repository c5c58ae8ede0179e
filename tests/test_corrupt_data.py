"""A corrupt TFRecord shard is named, and can be skipped with what it loses counted (issue 12)."""

import os
import pathlib
import subprocess
import sys

import pytest
import tensorflow as tf

from data_pipeline import tfrecord_io
from data_pipeline.input_pipeline import build_dataset
from kdc_tf.config import AugmentConfig, EncoderConfig
from kdc_tf.geometry import Geometry

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory, small_embedded):
  """[whole shard, the same shard truncated after 3 records and a half], and their counts."""
  source = tfrecord_io.list_tfrecord_files(small_embedded["train"])[0]
  records = [r.numpy() for r in tf.data.TFRecordDataset(source)]
  directory = tmp_path_factory.mktemp("shards")
  whole, broken = str(directory / "a-00000-of-00002.tfrecord"), str(
      directory / "a-00001-of-00002.tfrecord")
  data = pathlib.Path(source).read_bytes()
  pathlib.Path(whole).write_bytes(data)
  # Each record is a 16-byte frame around its payload.
  cut = sum(len(r) + 16 for r in records[:3]) + len(records[3]) // 2
  pathlib.Path(broken).write_bytes(data[:cut])
  return whole, broken, len(records)


def test_check_shards_names_the_corrupt_shard_and_counts_what_is_lost(shards):
  whole, broken, num_records = shards
  checks = tfrecord_io.check_shards([whole, broken])
  assert [(c.records, c.error is None) for c in checks] == [(num_records, True), (3, False)]
  message = tfrecord_io.corrupt_shards_message(checks)
  assert message.startswith(f"{broken}: corrupt after 3 readable records")
  assert whole not in message and checks[1].dropped_bytes > 0


def test_skip_corrupt_records_trains_on_the_readable_records(shards):
  whole, broken, num_records = shards
  def count(**kwargs):
    dataset = build_dataset(f"{whole},{broken}", Geometry(input_size=129), EncoderConfig(),
                            AugmentConfig(), 1, training=False, **kwargs)
    return sum(1 for _ in dataset)

  with pytest.raises(tf.errors.DataLossError):
    count()
  assert count(skip_corrupt_records=True) == num_records + 3


def test_train_binary_names_the_corrupt_shard(shards, tmp_path):
  _, broken, _ = shards
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
  result = subprocess.run(
      [sys.executable, "-m", "experiments.train", f"--train_pattern={broken}",
       f"--model_dir={tmp_path}", "--override=model.depth=tiny", "--input_size=129"],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert f"{broken}: corrupt after 3 readable records" in result.stderr
  assert "--skip_corrupt_records" in result.stderr
