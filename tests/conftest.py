"""Shared test fixtures: quiet TF, the ../shared/data sample location, temporary output dirs."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(
    os.environ.get("KDC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


def _require(path: pathlib.Path) -> pathlib.Path:
  if not path.exists():
    pytest.skip(f"real sample data not found at {path} (../shared/data beside the checkout, "
                "or set KDC_SHARED_DATA)")
  return path


@pytest.fixture(scope="session")
def coco_sample_dir() -> pathlib.Path:
  """../shared/data/coco_sample: 4 COCO val2017 images, 14 people (2 without keypoints)."""
  return _require(SHARED_DATA / "coco_sample")


@pytest.fixture(scope="session")
def crowdpose_sample_dir() -> pathlib.Path:
  """../shared/data/crowdpose_sample: 2 CrowdPose images, 5 people, 14 keypoints, no masks."""
  return _require(SHARED_DATA / "crowdpose_sample")


@pytest.fixture(scope="session")
def eval_reference_dir() -> pathlib.Path:
  """../shared/data/eval_reference: 73 predictions for coco_sample and pycocotools' printout."""
  return _require(SHARED_DATA / "eval_reference")


@pytest.fixture(scope="session")
def small_embedded(tmp_path_factory) -> dict:
  """A 16 + 4 image build of the embedded synthetic dataset (`synthetic.ensure_embedded_dataset`
  paths), for tests that need real TFRecords and a validation split but not the quick start's
  2048 images: that build takes about a minute on two cores and writes into the checkout."""
  from data_pipeline import synthetic  # Imported here: TF loads after the logging level is set.
  return synthetic.ensure_embedded_dataset(str(tmp_path_factory.mktemp("embedded")),
                                           num_train=16, num_val=4)
