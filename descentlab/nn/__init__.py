"""Layers torch lacks.

:class:`SwitchableNorm` (and its 1d/2d/3d variants) is the only normalisation
written here. The other normalisations named in the literature are torch's
and should be used from there:

==========================  ==================================================
batch normalisation         ``torch.nn.BatchNorm1d``, ``BatchNorm2d``, ``BatchNorm3d``
layer normalisation         ``torch.nn.LayerNorm``
instance normalisation      ``torch.nn.InstanceNorm1d``, ``InstanceNorm2d``, ``InstanceNorm3d``
group normalisation         ``torch.nn.GroupNorm``
weight normalisation        ``torch.nn.utils.parametrizations.weight_norm``
spectral normalisation      ``torch.nn.utils.parametrizations.spectral_norm``
==========================  ==================================================
"""

from descentlab.nn.switchable_norm import (
    SwitchableNorm,
    SwitchableNorm1d,
    SwitchableNorm2d,
    SwitchableNorm3d,
)

__all__ = ["SwitchableNorm", "SwitchableNorm1d", "SwitchableNorm2d", "SwitchableNorm3d"]
