"""Distributed training: compressed gradient exchange for DDP, and the tools to measure it.

Communication hooks for ``torch.nn.parallel.DistributedDataParallel``, each
with its state class (``ddp.register_comm_hook(state, hook)``, or
:func:`register_comm_hook` which checks first):

========================  ============================================  ==========================
state / hook              scheme                                        message per entry
========================  ============================================  ==========================
ThresholdState /          Strom 2015: residuals, send what passed τ     index (Rice) + 1 bit, or
threshold_hook            (fixed τ, or τ adapted to a density)          index + value (fp16)
TopKState / topk_hook     top-k with error feedback                     index (Rice) + value (fp16)
DGCState / dgc_hook       deep gradient compression (Lin et al. 2018)   index (Rice) + value (fp16)
SignState / sign_hook     EF-SignSGD, scaled by the mean magnitude      1 bit (+ 4 bytes a bucket)
========================  ============================================  ==========================

Also: :func:`run_ranks` (local multi-process runs on loopback),
:class:`Traffic` and :func:`counting_torch_collectives` (bytes counted from the
tensors handed to the collectives), and the wire formats in
:mod:`descentlab.distributed.coding`.
"""

from descentlab.distributed.dgc import WARMUP, DGCState, dgc_hook
from descentlab.distributed.launch import RankError, run_ranks
from descentlab.distributed.sign import SignState, sign_hook
from descentlab.distributed.state import SUPPORTED_BACKENDS, CommState, register_comm_hook
from descentlab.distributed.threshold import ThresholdState, threshold_hook
from descentlab.distributed.topk import TopKState, topk_hook
from descentlab.distributed.traffic import Traffic, counting_torch_collectives

__all__ = [
    "ThresholdState",
    "threshold_hook",
    "TopKState",
    "topk_hook",
    "DGCState",
    "dgc_hook",
    "WARMUP",
    "SignState",
    "sign_hook",
    "CommState",
    "register_comm_hook",
    "SUPPORTED_BACKENDS",
    "run_ranks",
    "RankError",
    "Traffic",
    "counting_torch_collectives",
]
