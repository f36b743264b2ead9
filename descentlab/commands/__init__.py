"""Sub-commands of the ``descentlab`` command line, one module each (see :mod:`descentlab.cli`)."""
