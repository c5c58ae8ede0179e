"""Runs a predictor on an image, a folder of images or a video: COCO results plus overlays.

Writes `output_dir/results.json` (COCO results: keypoints, score, RLE segmentation per person),
`output_dir/image_ids.json` (input file or frame -> image_id) and overlays: one PNG per image in
`output_dir/overlays/`, or `output_dir/<video name>_overlay.mp4` for a video. Image ids are the
file names' numbers when every name is a number (COCO's 000000000785.jpg -> 785), else 1, 2, ...
in sorted order (or an annotation file's ids, by file name, with `annotations`); a video's frames
are numbered from 0. The JSON files are written atomically, and
a second run into the same output_dir while one is running is refused. Files that are not images,
or do not decode (`kdc_tf.media`), are skipped with the reason logged and counted.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import pathlib
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import tensorflow as tf
from absl import logging

from kdc_tf import media
from kdc_tf.coco_format import image_ids_by_file_name
from kdc_tf.datasets import DatasetSpec, get_dataset_spec
from kdc_tf.evaluation.results import grouping_to_results, write_results
from kdc_tf.export import METADATA_FILE, SERVING_SIGNATURE, load_metadata
from kdc_tf.io_utils import atomic_write_json, exclusive_output_dir
from kdc_tf.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, UnreadableImageError, read_image
from kdc_tf.visualization.overlay import draw_predictions

_VIDEO_LOG_EVERY = 25

# One image's prediction: uint8 RGB [H, W, 3] -> the serving outputs as numpy arrays.
PredictFn = Callable[[np.ndarray], Dict[str, np.ndarray]]


@dataclasses.dataclass
class Summary:
  """What a run did: processed inputs, people found, and skipped files by reason."""

  processed: int = 0
  people: int = 0
  # Skipped paths by kind ("not an image", "unreadable"), and each one's full reason.
  skipped: Dict[str, List[str]] = dataclasses.field(
      default_factory=lambda: collections.defaultdict(list))
  reasons: Dict[str, str] = dataclasses.field(default_factory=dict)

  def skip(self, path: pathlib.Path, reason: str) -> None:
    """Records a skipped file; `reason` starts with its kind, e.g. 'unreadable: empty file'."""
    logging.warning("Skipping %s: %s", path, reason)
    self.skipped[reason.split(":")[0]].append(str(path))
    self.reasons[str(path)] = reason

  @property
  def num_skipped(self) -> int:
    return sum(len(paths) for paths in self.skipped.values())

  def describe(self) -> str:
    text = f"{self.processed} processed, {self.people} people, {self.num_skipped} skipped"
    details = "; ".join(f"{reason}: {len(paths)}" for reason, paths in sorted(self.skipped.items()))
    return f"{text} ({details})" if details else text


def image_ids_for(paths: Sequence[pathlib.Path]) -> List[int]:
  """COCO ids from numeric file names when all are numbers and distinct, else 1..n."""
  stems = [p.stem for p in paths]
  if stems and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
    return [int(s) for s in stems]
  return list(range(1, len(paths) + 1))


def overlay_file_names(paths: Sequence[pathlib.Path]) -> List[str]:
  """`<stem>.png`, or `<name with _ for .>.png` where two inputs share a stem (a.jpg, a.png)."""
  stem_counts = collections.Counter(p.stem for p in paths)
  return [f"{p.stem}.png" if stem_counts[p.stem] == 1 else f"{p.name.replace('.', '_')}.png"
          for p in paths]


def saved_model_predict_fn(export_dir: str) -> Tuple[PredictFn, DatasetSpec]:
  """The `serving_default` signature of an export, and the dataset its outputs follow."""
  try:
    spec = get_dataset_spec(load_metadata(export_dir)["dataset"])
  except tf.errors.NotFoundError:
    raise FileNotFoundError(f"{export_dir} is not a kdc-tf export (no {METADATA_FILE}); "
                            "write one with experiments.export") from None
  serve = tf.saved_model.load(export_dir).signatures[SERVING_SIGNATURE]

  def predict(image: np.ndarray) -> Dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in serve(image=tf.constant(image)).items()}

  return predict, spec


def predict_images(predict: PredictFn, spec: DatasetSpec, paths: Sequence[pathlib.Path],
                   output_dir: pathlib.Path, keypoint_threshold: float = 0.1,
                   ids_by_name: Optional[Dict[str, int]] = None) -> Summary:
  """Predicts each image file, writing results.json, image_ids.json and one overlay PNG each.

  `ids_by_name` (`coco_format.image_ids_by_file_name`) gives the image ids of an annotation
  file, so that results.json can be evaluated against it; a photo it does not list is skipped.
  """
  summary = Summary()
  candidates = []
  for path in paths:
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
      summary.skip(path, f"not an image: extension {path.suffix or '(none)'!r}")
    elif ids_by_name is not None and path.name not in ids_by_name:
      summary.skip(path, "not in --annotations: no image id")
    else:
      candidates.append(path)
  if ids_by_name is not None:
    image_ids = [ids_by_name[p.name] for p in candidates]
    logging.info("Image ids: from the --annotations file's entries for these file names")
  else:
    image_ids = image_ids_for(candidates)
    numeric = bool(candidates) and all(p.stem.isdigit() and int(p.stem) == i
                                       for p, i in zip(candidates, image_ids))
    logging.info("Image ids: %s (give --annotations to use an annotation file's ids)",
                 "the file names' numbers" if numeric else "1..n in sorted file order")
  overlay_dir = output_dir / "overlays"
  overlay_dir.mkdir(parents=True, exist_ok=True)
  results, id_map = [], {}
  overlay_names = overlay_file_names(candidates)
  for index, (path, image_id) in enumerate(zip(candidates, image_ids)):
    try:
      image = read_image(path)
    except UnreadableImageError as e:
      summary.skip(path, str(e))
      continue
    start = time.perf_counter()
    outputs = predict(image)
    found = _collect(results, outputs, image_id, summary)
    id_map[path.name] = image_id
    overlay = draw_predictions(image, outputs["keypoints"], outputs["scores"], outputs["masks"],
                               int(outputs["num_people"]), spec, keypoint_threshold)
    cv2.imwrite(str(overlay_dir / overlay_names[index]), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
    logging.info("[%d/%d] %s: %d people, %.2f s", index + 1, len(candidates), path.name, found,
                 time.perf_counter() - start)
  _write_outputs(output_dir, results, id_map)
  return summary


def predict_video(predict: PredictFn, spec: DatasetSpec, path: pathlib.Path,
                  output_dir: pathlib.Path, keypoint_threshold: float = 0.1,
                  max_frames: int = 0) -> Summary:
  """Predicts each frame of a video: results.json (image_id = frame index) and an MP4 overlay."""
  video_path = output_dir / f"{path.stem}_overlay.mp4"
  writer = None
  summary, results, id_map = Summary(), [], {}
  with media.VideoReader(path) as video:
    total = video.frame_count
    if max_frames:
      total = min(total, max_frames) if total > 0 else max_frames
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
      for image in itertools.islice(video, max_frames or None):
        frame_index = summary.processed
        outputs = predict(image)
        _collect(results, outputs, frame_index, summary)
        id_map[f"{path.name}#{frame_index}"] = frame_index
        overlay = draw_predictions(image, outputs["keypoints"], outputs["scores"],
                                   outputs["masks"], int(outputs["num_people"]), spec,
                                   keypoint_threshold)
        if writer is None:
          writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), video.fps,
                                   (image.shape[1], image.shape[0]))
          if not writer.isOpened():
            raise RuntimeError(f"cannot write {video_path} with the mp4v codec")
        writer.write(cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        if summary.processed % _VIDEO_LOG_EVERY == 0:
          logging.info("%s: frame %d/%s, %.1f frames/s", path.name, summary.processed,
                       total if total > 0 else "?",
                       summary.processed / (time.perf_counter() - start))
    finally:
      if writer is not None:
        writer.release()
  if summary.processed == 0:
    raise UnreadableImageError(f"{path}: no frame could be decoded")
  logging.info("%s: %d frames, %.1f frames/s. Wrote %s", path.name, summary.processed,
               summary.processed / (time.perf_counter() - start), video_path)
  _write_outputs(output_dir, results, id_map)
  return summary


def run(predict: PredictFn, spec: DatasetSpec, input_path: str, output_dir: str,
        keypoint_threshold: float = 0.1, max_frames: int = 0,
        annotations: Optional[str] = None) -> Summary:
  """Dispatches an image file, a folder or a video to the functions above; a second run into
  the same `output_dir` at the same time is refused (`io_utils.OutputDirBusyError`).
  `annotations`: take the photos' image ids from this COCO-format file (by file name)."""
  ids_by_name = image_ids_by_file_name(annotations) if annotations else None
  with exclusive_output_dir(output_dir):
    return _run(predict, spec, input_path, output_dir, keypoint_threshold, max_frames,
                ids_by_name)


def _run(predict: PredictFn, spec: DatasetSpec, input_path: str, output_dir: str,
         keypoint_threshold: float, max_frames: int,
         ids_by_name: Optional[Dict[str, int]]) -> Summary:
  source, output = pathlib.Path(input_path), pathlib.Path(output_dir)
  if source.is_dir():
    paths = sorted(p for p in source.iterdir() if p.is_file())
    if not paths:
      raise FileNotFoundError(f"{source} holds no file")
    return predict_images(predict, spec, paths, output, keypoint_threshold, ids_by_name)
  if not source.is_file():
    raise FileNotFoundError(f"{source}: no such file or folder")
  if source.suffix.lower() in VIDEO_EXTENSIONS:
    return predict_video(predict, spec, source, output, keypoint_threshold, max_frames)
  if source.suffix.lower() not in IMAGE_EXTENSIONS:
    raise ValueError(f"{source}: not an image ({sorted(IMAGE_EXTENSIONS)}) or a video "
                     f"({sorted(VIDEO_EXTENSIONS)})")
  summary = predict_images(predict, spec, [source], output, keypoint_threshold, ids_by_name)
  if summary.num_skipped:
    raise UnreadableImageError(f"{source}: {summary.reasons[str(source)]}")
  return summary


def _collect(results: list, outputs: Dict[str, np.ndarray], image_id: int,
             summary: Summary) -> int:
  """Appends one image's COCO results; returns its number of people."""
  num_people = int(outputs["num_people"])
  results.extend(grouping_to_results(image_id, outputs["keypoints"], outputs["scores"],
                                     num_people, outputs["masks"],
                                     outputs.get("mask_scores")))
  summary.processed += 1
  summary.people += num_people
  return num_people


def _write_outputs(output_dir: pathlib.Path, results: list, id_map: Dict[str, int]) -> None:
  write_results(str(output_dir / "results.json"), results)
  atomic_write_json(str(output_dir / "image_ids.json"), id_map, indent=1)
