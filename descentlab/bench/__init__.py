"""The benchmark harness behind ``descentlab compare`` (see :mod:`descentlab.bench.harness`)."""
