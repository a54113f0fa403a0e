"""Measuring what a model is worth: Fréchet distances (FID, FD-DINOv2, the offline digits space), KID,
precision/recall and class agreement, each beside its real-vs-real floor; sweeps over guidance, steps and schedulers;
the plots. `evaluate` is the entry point (and `hf-ddpm evaluate` its command line)."""

from .evaluate import FRECHET_METRICS, METRICS, EvaluationResult, Evaluator, default_metrics, evaluate, sample_images
from .features import DigitsFeatures, DinoV2Features, FeatureExtractor, InceptionFeatures
from .judges import DigitClassifier, ImageClassifierJudge, digit_classifier, label_accuracy
from .metrics import frechet_distance, kernel_distance, precision_recall
from .reference import RealFeatures, held_out_size, real_features, split_halves
from .report import write_report

__all__ = [
    "FRECHET_METRICS", "METRICS", "DigitClassifier", "DigitsFeatures", "DinoV2Features", "EvaluationResult", "Evaluator",
    "FeatureExtractor", "ImageClassifierJudge", "InceptionFeatures", "RealFeatures", "default_metrics",
    "digit_classifier", "evaluate", "frechet_distance", "held_out_size", "kernel_distance", "label_accuracy",
    "precision_recall", "real_features", "sample_images", "split_halves", "write_report",
]  # fmt: skip
