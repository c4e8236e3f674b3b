"""Quality metrics (torchmetrics ``Metric`` subclasses) and their registry, built from ``conf/metrics``."""

from eval.metrics.base import VideoMetric

__all__ = ["VideoMetric"]
