"""Packaging that pyproject.toml cannot say: the Hydra configs ship inside the package.

A checkout keeps them in ``conf/`` at the top (Hydra, the tests, the docs and every contributor use that path);
the wheel carries the same files as ``eval/conf/`` (the package-data patterns are in pyproject.toml), where
:mod:`eval.paths` finds them when no checkout is around. Mapping the folder, rather than moving it or linking it,
keeps one copy of every config file and the checkout's layout unchanged.
"""

from setuptools import find_namespace_packages, setup

NOT_CODE = ["*__pycache__*"]
CODE = find_namespace_packages(include=["eval*", "live2diff*", "baselines*"], exclude=NOT_CODE)
CONF = ["eval.conf"] + [
    f"eval.conf.{group}" for group in find_namespace_packages(where="conf", exclude=NOT_CODE)
]

setup(
    packages=CODE + CONF,
    package_dir={"eval.conf": "conf"},  # eval.conf.method -> conf/method, ...
)
