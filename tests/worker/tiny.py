"""A project small enough to train in seconds on one CPU thread (64x80 input, tiny HRNet, a dozen iterations;
a local stage of 32-pixel crops trained for a few iterations)."""

TINY_TRAINING = {
    "iterations": 12,
    "batch_size": 4,
    "warmup": 2,
    "kanet": {"iterations": 4, "hidden": 8},
    "refine": {"iterations": 4, "crops": 8},
}
TINY_PROJECT = {
    "name": "ceph",
    "modality": "cephalometric",
    "backbone": "hrnet_w18_tiny",
    "input_width": 64,
    "input_height": 80,
    "local_stage": {"crop_size": 32},
    "strategy": "kamp",
    "training": TINY_TRAINING,
}
