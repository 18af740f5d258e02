"""Shared pytest set-up.

Each xdist worker runs on one of the two cores; torch's intra-op thread pool would make the
workers fight over them (measured: single small tensor ops 100x slower under load).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
