"""ImageNet's RGB statistics on the [0, 1] pixel scale, in one place (no torch): the per-channel
mean/std, and the PCA of the RGB covariance for §3.4's colour augmentation."""

from __future__ import annotations

# The per-channel mean/std torchvision's weights were trained with (also the values in
# fb.resnet.torch, the paper authors' reference port).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# §3.4 "the standard color augmentation in [21]" (AlexNet's PCA lighting noise). These are the
# widely used eigenvalues/eigenvectors of the ImageNet RGB covariance on the [0, 1] scale (as in
# fb.resnet.torch); the eigenvectors are the columns.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
