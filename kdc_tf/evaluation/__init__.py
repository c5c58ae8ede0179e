"""COCO-style evaluation of grouping outputs (ARCHITECTURE.md section 6) with pycocotools."""

from kdc_tf.evaluation.coco_evaluator import EvaluationReport, run_cocoeval
from kdc_tf.evaluation.evaluator import evaluate, load_ground_truth
from kdc_tf.evaluation.results import (decode_segmentation, encode_masks, grouping_to_results,
                                       read_results, write_results)

__all__ = [
    "EvaluationReport", "decode_segmentation", "encode_masks", "evaluate", "grouping_to_results",
    "load_ground_truth", "read_results", "run_cocoeval", "write_results",
]
