"""``python -m live2diff.train_tiny``: see :mod:`live2diff.train_tiny.cli`."""

from live2diff.train_tiny.cli import main

raise SystemExit(main())
