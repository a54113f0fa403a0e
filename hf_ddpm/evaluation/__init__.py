"""Measuring what a model is worth: Fréchet distances (FID, FD-DINOv2, the offline digits and domain spaces), KID,
precision/recall and class agreement, each beside its real-vs-real floor; sweeps over guidance, steps and schedulers;
the plots. `evaluate` is the entry point (and `hf-ddpm evaluate` its command line); `registry` lists the metrics.

The public names import on first use (PEP 562), so that reading the metric names (`registry`) costs no torch import.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "EvaluationResult": ".results",
    "Evaluator": ".evaluator",
    "default_metrics": ".evaluator",
    "evaluate": ".evaluator",
    "sample_images": ".evaluator",
    "FRECHET_METRICS": ".registry",
    "METRICS": ".registry",
    "REGISTRY": ".registry",
    "Metric": ".registry",
    "DomainClassifier": ".domain",
    "DomainFeatures": ".domain",
    "domain_classifier": ".domain",
    "DigitsFeatures": ".features",
    "DinoV2Features": ".features",
    "FeatureExtractor": ".features",
    "InceptionFeatures": ".features",
    "DigitClassifier": ".judges",
    "ImageClassifierJudge": ".judges",
    "digit_classifier": ".judges",
    "label_accuracy": ".judges",
    "frechet_distance": ".metrics",
    "kernel_distance": ".metrics",
    "precision_recall": ".metrics",
    "RealFeatures": ".reference",
    "held_out_size": ".reference",
    "real_features": ".reference",
    "split_halves": ".reference",
    "write_report": ".report",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .domain import DomainClassifier, DomainFeatures, domain_classifier
    from .evaluator import Evaluator, default_metrics, evaluate, sample_images
    from .features import DigitsFeatures, DinoV2Features, FeatureExtractor, InceptionFeatures
    from .judges import DigitClassifier, ImageClassifierJudge, digit_classifier, label_accuracy
    from .metrics import frechet_distance, kernel_distance, precision_recall
    from .reference import RealFeatures, held_out_size, real_features, split_halves
    from .registry import FRECHET_METRICS, METRICS, REGISTRY, Metric
    from .report import write_report
    from .results import EvaluationResult


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
