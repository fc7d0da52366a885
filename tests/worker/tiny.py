"""A project small enough to train in seconds on one CPU thread (64x80 input, tiny HRNet, a dozen iterations)."""

TINY_TRAINING = {"iterations": 12, "batch_size": 4, "warmup": 2, "kanet": {"iterations": 4, "hidden": 8}}
TINY_PROJECT = {
    "name": "ceph",
    "modality": "cephalometric",
    "backbone": "hrnet_w18_tiny",
    "input_width": 64,
    "input_height": 80,
    "strategy": "kamp",
    "training": TINY_TRAINING,
}
