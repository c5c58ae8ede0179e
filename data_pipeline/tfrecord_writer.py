"""Writes a COCO-format keypoint dataset (COCO, CrowdPose, OCHuman) as sharded TFRecords.

`serialize_record` is the one serialisation of an annotated image (the oracle and the tests use it
too); `write_tfrecords` reads the annotations, checks every image decodes and writes the shards in
the format of `tfrecord_io` with `num_workers` processes, logging progress with images/s and the
ETA, counting what it skipped by reason (`annotations` has the policy). Shards appear whole or not
at all; existing shards are refused, kept ('resume') or rewritten ('overwrite').
"""

from __future__ import annotations

import dataclasses
import datetime
import multiprocessing
import threading
import time
from typing import Any, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from data_pipeline import annotations
from data_pipeline import tfrecord_io
from kdc_tf.datasets import get_dataset_spec


EXISTING_SHARDS = ("refuse", "resume", "overwrite")


@dataclasses.dataclass
class WriteSummary:
  """What `write_tfrecords` wrote and skipped."""

  files: List[str]
  num_images: int
  num_people: int
  skips: annotations.SkipCounter
  seconds: float
  kept_shards: int = 0  # complete shards of an earlier run kept by existing='resume'

  def line(self) -> str:
    """The one-line result: images, people, shards, time, skips."""
    kept = f" ({self.kept_shards} existing shards kept)" if self.kept_shards else ""
    return (f"wrote {self.num_images} images, {self.num_people} people into {len(self.files)} "
            f"shard(s){kept} in {self.seconds:.1f} s; {self.skips.total()} skipped or fixed")

  def __str__(self) -> str:
    return (f"{self.line()} ({self.files[0]} ...)\n"
            f"skipped or fixed, by reason:\n{self.skips.summary()}")


@dataclasses.dataclass
class _ShardJob:
  path: str
  records: List[annotations.ImageRecord]
  num_keypoints: int


@dataclasses.dataclass
class _ShardResult:
  num_images: int
  num_people: int
  skips: List[Tuple[annotations.SkipReason, str]]


_progress_counter: Optional[Any] = None  # a multiprocessing Value: images done, over all workers


def _init_worker(counter: Any) -> None:
  global _progress_counter
  _progress_counter = counter


def serialize_record(record: annotations.ImageRecord, image_bytes: bytes,
                     num_keypoints: int) -> bytes:
  """The TFRecord example of one image record, masks rasterised with pycocotools."""
  keypoints = np.zeros((len(record.people), num_keypoints, 3), np.float32)
  for i, person in enumerate(record.people):
    keypoints[i] = person.keypoints
  return tfrecord_io.serialize_example(
      image_bytes=image_bytes,
      image_id=record.image_id,
      person_ids=[p.id for p in record.people],
      keypoints=keypoints,
      crowd_mask=record.crowd_mask(),
      instance_masks=record.instance_masks() if record.has_masks else None,
      has_masks=record.has_masks,
      crowd_index=record.crowd_index)


def _write_shard(job: _ShardJob) -> _ShardResult:
  """Writes one shard under a temporary name, renamed when complete (runs in a worker)."""
  result = _ShardResult(0, 0, [])
  with tfrecord_io.AtomicRecordWriter(job.path) as writer:
    for record in job.records:
      try:
        writer.write(serialize_record(record, annotations.load_image_bytes(record),
                                      job.num_keypoints))
        result.num_images += 1
        result.num_people += len(record.people)
      except annotations.ImageError as e:
        result.skips.append((e.reason, str(e)))
      with _progress_counter.get_lock():
        _progress_counter.value += 1
  return result


def _log_progress(counter: Any, total: int, start: float, log_every: int,
                  done: threading.Event) -> None:
  """Logs images done, images/s and the ETA every `log_every` images (checked every 2 s), and
  once more at the end."""
  logged, finished = 0, False
  while not finished:
    finished = done.wait(2.0)
    value = counter.value
    if value - logged >= log_every or (finished and value > logged):
      rate = value / max(time.monotonic() - start, 1e-9)
      eta = datetime.timedelta(seconds=round((total - value) / max(rate, 1e-9)))
      logging.info("%d / %d images (%.1f%%), %.1f images/s, eta %s", value, total,
                   100.0 * value / max(total, 1), rate, eta)
      logged = value


def _shards_to_write(paths: List[str], output_prefix: str, existing: str) -> List[int]:
  """Indices of the shards to write, after checking what the output prefix already holds."""
  if existing not in EXISTING_SHARDS:
    raise ValueError(f"existing must be one of {EXISTING_SHARDS}, got {existing!r}")
  others = sorted(set(tf.io.gfile.glob(f"{output_prefix}-?????-of-?????.tfrecord")) - set(paths))
  present = [i for i, path in enumerate(paths) if tf.io.gfile.exists(path)]
  if existing == "overwrite":
    return list(range(len(paths)))
  if others:
    raise FileExistsError(f"{output_prefix} already has shards of another --num_shards (e.g. "
                          f"{others[0]}); remove them or choose another --output")
  if present and existing == "refuse":
    raise FileExistsError(f"{len(present)} of the {len(paths)} shards exist already (e.g. "
                          f"{paths[present[0]]}): pass --resume to write only the missing ones "
                          "(from the same annotations), or --overwrite")
  if present:
    logging.info("Resuming: %d of %d shards exist and are kept", len(present), len(paths))
  return [i for i in range(len(paths)) if i not in present]


def write_tfrecords(annotations_path: str, images_dir: str, output_prefix: str, num_shards: int,
                    dataset: str, *, keep_images_without_people: bool = False,
                    log_every: int = 1000, num_workers: int = 1,
                    existing: str = "refuse") -> WriteSummary:
  """Reads the annotations, checks every image decodes, writes `num_shards` TFRecord shards.

  Image i goes to shard i % num_shards. Shards are written by `num_workers` processes (one shard
  at a time each), each shard under a temporary name renamed when complete, so an interrupted run
  leaves only whole shards: `existing='resume'` then writes the missing ones, 'overwrite' all;
  'refuse' (default) stops if any shard exists. By default only images with at least one person
  are written (COCOPersons, the paper's training set); `keep_images_without_people` also writes
  the others as negatives.
  """
  start = time.monotonic()
  if num_workers < 1:
    raise ValueError(f"num_workers must be >= 1, got {num_workers}")
  paths = tfrecord_io.shard_paths(output_prefix, num_shards)
  to_write = _shards_to_write(paths, output_prefix, existing)
  data = annotations.read_annotations(annotations_path, images_dir, dataset,
                                      keep_images_without_people=keep_images_without_people)
  if len(data.images) < num_shards:
    logging.warning("%d images for %d shards: %d shard(s) will be empty; use --num_shards=%d or "
                    "fewer", len(data.images), num_shards, num_shards - len(data.images),
                    max(len(data.images), 1))
  num_keypoints = get_dataset_spec(dataset).num_keypoints
  jobs = [_ShardJob(paths[i], data.images[i::num_shards], num_keypoints) for i in to_write]
  total = sum(len(job.records) for job in jobs)
  logging.info("Writing %d images into %d shard(s) with %d worker(s)", total, len(jobs),
               num_workers)
  context = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe.
  counter = context.Value("q", 0)
  done = threading.Event()
  monitor = threading.Thread(target=_log_progress, args=(counter, total, start, log_every, done),
                             daemon=True)
  monitor.start()
  try:
    if num_workers == 1 or len(jobs) <= 1:
      _init_worker(counter)
      results = [_write_shard(job) for job in jobs]
    else:
      with context.Pool(min(num_workers, len(jobs)), _init_worker, (counter,)) as pool:
        results = pool.map(_write_shard, jobs, chunksize=1)
  finally:
    done.set()
    monitor.join()
  for result in results:
    for reason, example in result.skips:
      data.skips.add(reason, example)
  summary = WriteSummary(files=paths, num_images=sum(r.num_images for r in results),
                         num_people=sum(r.num_people for r in results), skips=data.skips,
                         seconds=time.monotonic() - start,
                         kept_shards=num_shards - len(to_write))
  logging.info("%s", summary)
  return summary
