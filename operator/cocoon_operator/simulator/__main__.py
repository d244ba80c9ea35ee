"""``python -m cocoon_operator.simulator``: run one simulated COCOON worker."""

from __future__ import annotations

from cocoon_operator.simulator.cli import main

raise SystemExit(main())
