"""Metrics of the lecture: divergences, integral probability metrics, likelihood units,
sample quality and multi-objective trade-offs. Torch tensors in, torch tensors out (CPU or
CUDA); every function documents its formula and units.
"""

from gencore.metrics.divergences import F_DIVERGENCES, f_divergence, gaussian_kl, kl_divergence, total_variation
from gencore.metrics.ipm import median_bandwidth, mmd, sliced_wasserstein, wasserstein_1d
from gencore.metrics.likelihood import bits_per_dim, cross_entropy, negative_log_likelihood, perplexity
from gencore.metrics.pareto import pareto_front, plot_pareto_front, scalarize, sweep
from gencore.metrics.reports import (
    collapsed_8gaussians,
    digits_real_reference,
    digits_sample_report,
    eight_gaussians_modes,
    ring_8gaussians,
    toy_sample_report,
)
from gencore.metrics.sample_quality import (
    classification_accuracy_score,
    digits_classifier,
    digits_inception_score,
    inception_score,
    memorization_report,
    train_classifier,
)

__all__ = [
    "total_variation", "kl_divergence", "f_divergence", "gaussian_kl", "F_DIVERGENCES",
    "mmd", "median_bandwidth", "wasserstein_1d", "sliced_wasserstein",
    "cross_entropy", "negative_log_likelihood", "bits_per_dim", "perplexity",
    "inception_score", "classification_accuracy_score", "memorization_report",
    "digits_classifier", "digits_inception_score", "train_classifier",
    "pareto_front", "scalarize", "sweep", "plot_pareto_front",
    "eight_gaussians_modes", "collapsed_8gaussians", "ring_8gaussians", "toy_sample_report",
    "digits_sample_report", "digits_real_reference",
]
