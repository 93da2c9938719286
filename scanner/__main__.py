"""``python -m scanner`` does what the ``scanner`` console script does."""

from scanner.cli import main

raise SystemExit(main())
