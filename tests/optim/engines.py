"""Engines the conformance suite runs every optimizer under."""

#: Every engine that must match torch.optim and the hand-computed steps.
ENGINES_UNDER_TEST = ["reference", "flat"]
