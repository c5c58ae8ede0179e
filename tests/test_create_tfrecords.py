"""create_tfrecords at scale: parallel shards, existing shards, empty shards, one printed line
(issue 12)."""

import logging
import os
import pathlib
import subprocess
import sys

import pytest
import tensorflow as tf

from data_pipeline import tfrecord_writer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _shard_contents(prefix):
  """{shard name: its tf.train.Examples} (compared as messages: map order may differ)."""
  return {pathlib.Path(p).name: [tf.train.Example.FromString(r.numpy())
                                 for r in tf.data.TFRecordDataset(p)]
          for p in sorted(tf.io.gfile.glob(f"{prefix}-*.tfrecord"))}


def test_two_workers_write_the_same_shards_and_print_one_line(coco_sample_dir, tmp_path):
  json_path = str(coco_sample_dir / "test_coco.json")
  serial = tfrecord_writer.write_tfrecords(json_path, str(coco_sample_dir),
                                            str(tmp_path / "serial"), 2, "coco")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
  result = subprocess.run(
      [sys.executable, "-m", "data_pipeline.create_tfrecords", f"--annotations={json_path}",
       f"--images={coco_sample_dir}", f"--output={tmp_path / 'parallel'}", "--num_shards=2",
       "--num_workers=2", "--log_every=1"],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.splitlines() == [
      result.stdout.strip()] and result.stdout.startswith("wrote 4 images, 14 people into 2")
  assert "with 2 worker(s)" in result.stderr and "images/s, eta" in result.stderr
  assert result.stderr.count("wrote 4 images") == 1  # the summary is logged once, not echoed
  parallel = _shard_contents(tmp_path / "parallel")
  assert [len(v) for v in parallel.values()] == [2, 2]
  assert list(parallel.values()) == list(_shard_contents(tmp_path / "serial").values())
  assert (serial.num_images, serial.num_people) == (4, 14)


def test_existing_shards_are_refused_or_resumed(coco_sample_dir, tmp_path):
  json_path, images = str(coco_sample_dir / "test_coco.json"), str(coco_sample_dir)
  prefix = str(tmp_path / "coco")
  tfrecord_writer.write_tfrecords(json_path, images, prefix, 2, "coco")
  with pytest.raises(FileExistsError, match="2 of the 2 shards exist already.*--resume"):
    tfrecord_writer.write_tfrecords(json_path, images, prefix, 2, "coco")
  with pytest.raises(FileExistsError, match="shards of another --num_shards"):
    tfrecord_writer.write_tfrecords(json_path, images, prefix, 4, "coco", existing="resume")
  first, second = sorted(tf.io.gfile.glob(prefix + "-*.tfrecord"))
  before = _shard_contents(prefix)
  os.remove(second)
  kept_mtime = os.stat(first).st_mtime_ns
  summary = tfrecord_writer.write_tfrecords(json_path, images, prefix, 2, "coco",
                                             existing="resume")
  assert (summary.num_images, summary.kept_shards) == (2, 1)
  assert os.stat(first).st_mtime_ns == kept_mtime
  assert _shard_contents(prefix) == before


def test_more_shards_than_images_warns(coco_sample_dir, tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  tfrecord_writer.write_tfrecords(str(coco_sample_dir / "test_coco.json"), str(coco_sample_dir),
                                   str(tmp_path / "coco"), 6, "coco")
  assert "4 images for 6 shards: 2 shard(s) will be empty" in caplog.text
