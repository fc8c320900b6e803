"""``python -m jsqa.streaming`` is ``jsqa-monitor``."""

from .cli import main

raise SystemExit(main())
