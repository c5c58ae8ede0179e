"""Per-dataset keypoint facts: names, flip permutation, kinematic tree, OKS sigmas, PGO groups.

This module is the single source of these facts. The target encoder, augmentation, the grouping
decoder and evaluation all read a `DatasetSpec`; nothing else lists keypoints or edges.
"""

from __future__ import annotations

import dataclasses
from typing import List, Tuple

# PGO groups (DESIGN.md): high-variance types (wrists, ankles, elbows, knees) and low-variance
# types (face, shoulders, hips, head, neck) take separate sigmas (`GroupingConfig`).
_HIGH_VARIANCE_PARTS = ("wrist", "ankle", "elbow", "knee")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the pipeline needs to know about one dataset's keypoint layout."""

  name: str
  keypoint_names: Tuple[str, ...]
  # Undirected kinematic-tree edges (DESIGN.md order). Used in both directions.
  edges: Tuple[Tuple[int, int], ...]
  oks_sigmas: Tuple[float, ...]
  # Whether the dataset annotates person masks (CrowdPose does not: SegNet is not trained on it).
  has_masks: bool = True

  def __post_init__(self):
    k = len(self.keypoint_names)
    if len(self.oks_sigmas) != k:
      raise ValueError(f"{self.name}: {len(self.oks_sigmas)} OKS sigmas for {k} keypoints")
    for a, b in self.edges:
      if not (0 <= a < k and 0 <= b < k) or a == b:
        raise ValueError(f"{self.name}: bad edge ({a}, {b})")
    if len(self.edges) != k - 1:
      raise ValueError(f"{self.name}: a tree over {k} keypoints has {k - 1} edges")

  @property
  def num_keypoints(self) -> int:
    return len(self.keypoint_names)

  @property
  def directed_edges(self) -> Tuple[Tuple[int, int], ...]:
    """The forward edges then the same edges reversed: 2 * len(edges) (source, target) pairs.

    Mid-range offset channel 2e (x) and 2e + 1 (y) belong to directed edge e.
    """
    return tuple(self.edges) + tuple((b, a) for a, b in self.edges)

  @property
  def num_directed_edges(self) -> int:
    return 2 * len(self.edges)

  @property
  def flip_permutation(self) -> Tuple[int, ...]:
    """Index map for a horizontal flip: new type i takes the old type flip_permutation[i]."""
    index = {n: i for i, n in enumerate(self.keypoint_names)}
    perm = []
    for name in self.keypoint_names:
      if name.startswith("left_"):
        perm.append(index["right_" + name[5:]])
      elif name.startswith("right_"):
        perm.append(index["left_" + name[6:]])
      else:
        perm.append(index[name])
    return tuple(perm)

  @property
  def high_variance(self) -> Tuple[bool, ...]:
    """Per keypoint type: in PGO's high-variance group (wrists, ankles, elbows, knees)."""
    return tuple(any(p in n for p in _HIGH_VARIANCE_PARTS) for n in self.keypoint_names)


COCO = DatasetSpec(
    name="coco",
    keypoint_names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
        "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
        "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"),
    edges=(
        (0, 1), (1, 3), (0, 2), (2, 4), (0, 5), (5, 7), (7, 9), (5, 11), (11, 13), (13, 15),
        (0, 6), (6, 8), (8, 10), (6, 12), (12, 14), (14, 16)),
    oks_sigmas=tuple(s / 10.0 for s in (
        .26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89)),
)

CROWDPOSE = DatasetSpec(
    name="crowdpose",
    keypoint_names=(
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
        "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
        "right_ankle", "top_head", "neck"),
    edges=(
        (12, 13), (13, 0), (0, 2), (2, 4), (0, 6), (6, 8), (8, 10),
        (13, 1), (1, 3), (3, 5), (1, 7), (7, 9), (9, 11)),
    oks_sigmas=tuple(s / 10.0 for s in (
        .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79)),
    has_masks=False,
)

# OCHuman ships COCO-format files with the COCO 17 keypoints.
_SPECS = {"coco": COCO, "ochuman": COCO, "crowdpose": CROWDPOSE}


def dataset_names() -> List[str]:
  """The registered dataset names (binaries' --dataset choices)."""
  return sorted(_SPECS)


def get_dataset_spec(name: str) -> DatasetSpec:
  """Returns the spec for 'coco', 'ochuman' (COCO layout) or 'crowdpose'."""
  try:
    return _SPECS[name.lower()]
  except KeyError:
    raise ValueError(f"Unknown dataset {name!r}; expected one of {sorted(_SPECS)}") from None
