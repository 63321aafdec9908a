"""Train a model on tool traces.

    python training/train.py --config training/configs/addition_tool_mamba.yaml [--resume]
    accelerate launch training/train.py --config ...          # one process per device
    torchrun --nproc_per_node 2 training/train.py --config ... # two CPU processes over gloo

A thin wrapper over :func:`hf_toolssm.training.train`; see that module for the optimiser and data choices.
"""

import sys

from hf_toolssm.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
