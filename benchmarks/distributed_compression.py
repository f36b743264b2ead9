"""Gradient compression under DDP: bytes each rank sends against the final metric.

Usage: ``python benchmarks/distributed_compression.py [--quick] [--out DIR] [--figure PNG]``
(the same as ``descentlab distributed``; see :mod:`descentlab.commands.distributed`).
The full run (4 ranks, 15 methods, 3 seeds, 2 tasks) takes about an hour on
2 shared cores; results are saved run by run, so a killed run resumes.
"""

import sys

from descentlab.commands.distributed import main

if __name__ == "__main__":
    sys.exit(main())
