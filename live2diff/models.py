"""Kept for existing imports (``live2diff.models.build_components`` in the README and users' methods): the
components live in :mod:`live2diff.components`, one module per component."""

from live2diff.components import *  # noqa: F403
from live2diff.components import __all__  # noqa: F401
