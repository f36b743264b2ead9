"""Optimizer step speed: torch.optim (for-loop/foreach/fused) vs descentlab's engines.

Usage: ``python benchmarks/step_speed.py [--quick] [--startup] [--json PATH]``
(the same as ``descentlab speed``; see :mod:`descentlab.commands.speed`).
"""

import sys

from descentlab.commands.speed import main

if __name__ == "__main__":
    sys.exit(main())
