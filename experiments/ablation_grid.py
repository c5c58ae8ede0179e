"""The paper's ablations as runs derived from one base configuration, and their result tables.

`ablation_runs` turns an ablation name into runs: a setting label, the experiment configuration
its model is trained with (the base's for decode-only settings, so they share one checkpoint) and
the decoder settings changed from `GroupingConfig()`. `experiments.ablate` trains, evaluates and
calls `markdown_table` / `csv_rows` on the measured rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence

from kdc_tf.config import ExperimentConfig, GroupingConfig

ABLATIONS = ("centroid", "disk_radius", "keycentroid", "pgo_sigma", "igo_sigma")
TITLES = {
    "centroid": "MaskCentroid: static (SM_c) vs dynamic (DM_c)",
    "disk_radius": "Keypoint disk radius R (input pixels)",
    "keycentroid": "With and without KeyCentroid",
    "pgo_sigma": "PGO sigma (units of 32 input pixels), one keypoint group at a time",
    "igo_sigma": "IGO sigma (units of 32 input pixels)",
}
DISK_RADII = (8.0, 16.0, 32.0)
KEYPOINT_COLUMNS = ("AP", "AP50", "AP75", "APm", "APl")


@dataclasses.dataclass(frozen=True)
class Run:
  """One row of an ablation table before it is measured."""

  ablation: str
  setting: str
  experiment: ExperimentConfig
  # GroupingConfig fields changed for this row (decode-only ablations).
  decoding: Dict[str, Any]
  # Name of the model_dir (runs with the same experiment share one).
  model_name: str

  @property
  def hparams(self) -> Dict[str, Any]:
    """The settings that vary across ablations, for TensorBoard's HParams dashboard."""
    values = {"ablation": self.ablation, "setting": self.setting, "model": self.model_name,
              "centroid_mode": self.experiment.encoder.centroid_mode,
              "disk_radius": float(self.experiment.geometry.disk_radius),
              "keycentroid_weight": float(self.experiment.loss.keycentroid),
              "steps": int(self.experiment.train.total_steps)}
    decoding = self.experiment.decoding_config(_grouping(self.decoding))
    values.update(pgo_sigma_high=float(decoding.pgo_sigma_high),
                  pgo_sigma_low=float(decoding.pgo_sigma_low),
                  igo_sigma=float(decoding.igo_sigma),
                  use_keycentroid=bool(decoding.use_keycentroid))
    return values


def _grouping(overrides: Dict[str, Any]) -> GroupingConfig:
  return dataclasses.replace(GroupingConfig(), **overrides)


def _with_radius(base: ExperimentConfig, radius: float) -> ExperimentConfig:
  return dataclasses.replace(base, geometry=dataclasses.replace(base.geometry, disk_radius=radius))


def ablation_runs(name: str, base: ExperimentConfig, sigmas: Sequence[float]) -> List[Run]:
  """The runs of one ablation (`ABLATIONS`) around `base`."""
  if name == "centroid":
    static = dataclasses.replace(
        base, encoder=dataclasses.replace(base.encoder, centroid_mode="static"))
    dynamic = dataclasses.replace(
        base, encoder=dataclasses.replace(base.encoder, centroid_mode="dynamic"))
    return [Run(name, "SM_c (static)", static, {}, _model_name(base, static, "centroid_static")),
            Run(name, "DM_c (dynamic)", dynamic, {},
                _model_name(base, dynamic, "centroid_dynamic"))]
  if name == "disk_radius":
    return [Run(name, f"R = {radius:g}", _with_radius(base, radius), {},
                _model_name(base, _with_radius(base, radius), f"disk_radius_{radius:g}"))
            for radius in DISK_RADII]
  if name == "keycentroid":
    without = dataclasses.replace(base, loss=dataclasses.replace(base.loss, keycentroid=0.0))
    return [Run(name, "with KeyCentroid", base, {}, "base"),
            Run(name, "trained with, decoded without", base, {"use_keycentroid": False}, "base"),
            Run(name, "without KeyCentroid (trained and decoded)", without, {},
                "keycentroid_off")]
  if name == "pgo_sigma":
    return ([Run(name, f"high-variance {sigma:g}", base, {"pgo_sigma_high": sigma}, "base")
             for sigma in sigmas] +
            [Run(name, f"low-variance {sigma:g}", base, {"pgo_sigma_low": sigma}, "base")
             for sigma in sigmas])
  if name == "igo_sigma":
    return [Run(name, f"{sigma:g}", base, {"igo_sigma": sigma}, "base") for sigma in sigmas]
  raise ValueError(f"unknown ablation {name!r}; expected one of {ABLATIONS}")


def _model_name(base: ExperimentConfig, experiment: ExperimentConfig, name: str) -> str:
  """'base' for the base configuration itself, so that every ablation reuses its model."""
  return "base" if experiment == base else name


def _figure(value: Optional[float]) -> str:
  return "-" if value is None or value < 0 else f"{value:.3f}"


def markdown_table(ablation: str, rows: Sequence[Dict[str, Any]]) -> str:
  """The paper's table layout: setting, keypoint AP columns, mask AP, oracle AP; then per type.

  Each row dict has `setting`, `model`, `keypoints` (stats), `segm_AP`, optional `oracle`
  (`{'keypoints_AP', 'segm_AP'}`) and `per_keypoint` (`PerKeypointReport.as_dict()`).
  """
  lines = [f"#### {TITLES[ablation]}", "",
           "| Setting | model | " + " | ".join(KEYPOINT_COLUMNS) +
           " | segm AP | oracle AP | oracle segm AP |",
           "| --- " * (len(KEYPOINT_COLUMNS) + 5) + "|"]
  for row in rows:
    oracle = row.get("oracle") or {}
    figures = [_figure(row["keypoints"].get(c)) for c in KEYPOINT_COLUMNS]
    lines.append(f"| {row['setting']} | {row['model']} | " + " | ".join(figures) +
                 f" | {_figure(row.get('segm_AP'))} | {_figure(oracle.get('keypoints_AP'))} | "
                 f"{_figure(oracle.get('segm_AP'))} |")
  names = list(rows[0]["per_keypoint"]) if rows else []
  lines += ["", "Per keypoint type: mean OKS term / mean confidence of the keypoints matched at "
            "OKS 0.5.", "", "| Setting | " + " | ".join(names) + " |",
            "| --- " * (len(names) + 1) + "|"]
  for row in rows:
    cells = [f"{v['oks']:.2f} / {v['confidence']:.2f}" if v["count"] else "-"
             for v in row["per_keypoint"].values()]
    lines.append(f"| {row['setting']} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def csv_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """Flat dicts (one per measured row) for csv.DictWriter: settings, figures, per-type means."""
  flat = []
  for row in rows:
    out = {"ablation": row["ablation"], "setting": row["setting"], "model": row["model"]}
    out.update({k: v for k, v in row["hparams"].items() if k not in out})
    out.update({f"keypoints_{c}": row["keypoints"].get(c) for c in KEYPOINT_COLUMNS})
    out["segm_AP"] = row.get("segm_AP")
    oracle = row.get("oracle") or {}
    out["oracle_keypoints_AP"] = oracle.get("keypoints_AP")
    out["oracle_segm_AP"] = oracle.get("segm_AP")
    for name, values in row["per_keypoint"].items():
      out[f"oks_{name}"] = values["oks"]
      out[f"confidence_{name}"] = values["confidence"]
    flat.append(out)
  return flat
