"""Run by tests/test_training_resume.py in a child process: ``almost ARGV...`` whose trainer stalls
before optimizer step STEP + 1, once the checkpoints and log rows of the steps before it are
written, so that the test can kill it at a known point.

Usage: python stall_at_step.py STEP ARGV...
"""

import sys
import time

from transformers import Trainer, TrainerCallback

from almost.cli import main


class StallAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            print(f"stalling at step {self.step}", flush=True)
            time.sleep(3600)


def stalling(train):
    def train_then_stall(self, *args, **kwargs):
        self.add_callback(StallAt(int(sys.argv[1])))
        return train(self, *args, **kwargs)

    return train_then_stall


if __name__ == "__main__":
    Trainer.train = stalling(Trainer.train)
    sys.exit(main(sys.argv[2:]))
