"""``python -m descentlab``: the command line, as the ``descentlab`` script runs it."""

from descentlab.cli import main

raise SystemExit(main())
