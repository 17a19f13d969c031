"""probekit: which layer, at which noise level, holds the most linearly separable features?

A toolkit for the DDAE probing method (Xiang et al., ICCV 2023): wrap a diffusion checkpoint in a
layer x timestep hook registry, cache pooled features to HDF5, probe every (timestep, layer) cell,
and plot accuracy over noise level and depth.
"""

__version__ = "0.1.0"
