"""Quality metrics (torchmetrics ``Metric`` subclasses) and their registry, built from ``conf/metrics``.

``VideoMetric`` is imported on first use: importing torchmetrics (and torchvision through it) takes seconds, and a
run whose units are all cached never uses it."""

__all__ = ["VideoMetric"]


def __getattr__(name: str):
    if name == "VideoMetric":
        from eval.metrics.base import VideoMetric

        return VideoMetric
    raise AttributeError(f"module 'eval.metrics' has no attribute {name!r}")
