"""resnet_repro: a training harness that reproduces He et al., "Deep Residual Learning for
Image Recognition" (CVPR 2016) and compares every run with the paper's numbers."""

__version__ = "0.1.0"
