"""Shared test setup.

The C++ kernel's own threading is tested in test_ops.py (same bits with 1 or 2 threads).

One torch thread: the models here are tiny, and on a shared 2-core machine OpenMP threads spinning against
other processes made each small op tens of times slower.
"""

import torch

torch.set_num_threads(1)
