"""Data: CIFAR-style sources (torchvision CIFAR-10, image folders, synthetic) and the in-memory
tensor pipeline that augments batches on the training device (§4.2); ImageNet folders with the
§3.4 augmentation. By job: sources.py / synthetic.py (CIFAR-style arrays), pipeline.py (the CIFAR
tensor stream), sampling.py (epoch order and holdout, both streams), image_files.py (scanning and
decoding), transforms.py (§3.4), imagenet.py (the ImageNet stream), device_input.py (decoding
on the device), build.py (a source by name), settings.py (`data.*`, torch-free),
generated_folders.py (folders for tests and bench). Imports nothing above this package but
errors and atomic writes.

Import from the module that does the job (`from resnet_repro.data.pipeline import TrainStream`):
this package re-exports nothing, so `resnet_repro.data.settings` stays torch-free.
"""
