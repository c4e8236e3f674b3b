"""Where the suite's own files are, in a checkout and in an installed wheel alike.

A checkout keeps the Hydra configs in ``conf/`` beside the packages (``eval/``, ``live2diff/``, ``baselines/``); a
wheel carries the same files as package data in ``eval/conf/`` (``setup.py`` maps ``conf/`` there, so the
checkout's folder is the only copy). Everything that reads a config file by path (the Hydra app, the "did you
mean" check, validation, the model builder) asks here, so a checkout and an installation never disagree.
"""

from __future__ import annotations

from pathlib import Path

#: the folder holding ``eval/``, ``live2diff/`` and ``baselines/``: a checkout's root or site-packages
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

_INSTALLED_CONF = Path(__file__).resolve().parent / "conf"

#: True in a checkout (``conf/`` beside the packages), False in an installed wheel
CHECKOUT = not _INSTALLED_CONF.is_dir() and (PACKAGE_ROOT / "conf" / "config.yaml").is_file()

#: the suite's Hydra config folder (``config.yaml`` and the groups ``method/``, ``model/``, ``dataset/``, ...)
CONF_DIR = PACKAGE_ROOT / "conf" if CHECKOUT else _INSTALLED_CONF
