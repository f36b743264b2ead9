"""Engines the conformance suite runs every optimizer under."""

import os

#: Every engine that must match torch.optim and the hand-computed steps. "auto" is "flat" on
#: models this small (it compiles only large runs), except where it runs torch's own fused
#: kernels (Adam/AdamW, SGD, Adagrad); tests/engine covers it (test_compiled, test_torch_fused).
ENGINES_UNDER_TEST = ["reference", "flat"]

#: DESCENTLAB_TEST_COMPILED=1 runs the whole suite under the compiled engine too: one compile
#: per optimizer/setting/dtype (10-30 s each with an empty inductor cache, about 1 s warm; the
#: cache lives in ~/.cache/descentlab/inductor, or $DESCENTLAB_CACHE_DIR, so it stays warm).
if os.environ.get("DESCENTLAB_TEST_COMPILED") == "1":
    ENGINES_UNDER_TEST.append("compiled")

#: Optimizers whose compiled kernels CI checks against the reference (tests/engine): they cover
#: every construct the rules use (first-step branch, scalar state, torch.where, two buffers).
CI_COMPILED_SUBSET = ["sgd", "nadam", "radam", "adadelta"]
