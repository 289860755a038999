"""Run by tests/test_fsdp.py under ``accelerate launch --config_file configs/accelerate/cpu_fsdp.yaml``:
``almost ARGV...`` with FSDP2 in effect on CPU processes (gloo).

Why a wrapper: accelerate 1.15 attaches the FSDP plugin only to an accelerator's process group.
``PartialState._prepare_backend`` gives CPU processes the type MULTI_CPU, and
``AcceleratorState.__init__`` switches to FSDP only from MULTI_GPU and its kin (MULTI_XPU, MULTI_NPU,
...), so on CPU the plugin is dropped and the launch trains as DDP (``almost`` says so, see
``training.warn_if_fsdp_dropped``). torch's FSDP2 (``fully_shard``) itself runs on CPU over gloo. This
wrapper sets the state to FSDP right after accelerate has built it, which is all that differs from a
GPU launch: transformers' Trainer, TRL and accelerate then take their FSDP2 paths (sharded
parameters, FULL_STATE_DICT gathered at save, FSDP checkpoints and their resume) as they do on GPUs.

With ALMOST_TEST_STALL_AT=N in the environment, every process stalls before optimizer step N + 1
(as in stall_at_step.py) so that the test can kill the job at a known point.

Usage: accelerate launch --config_file configs/accelerate/cpu_fsdp.yaml tests/fsdp_on_cpu.py ARGV...
"""

import os
import sys

import accelerate.state
from accelerate.utils import DistributedType
from stall_at_step import StallAt
from torch.distributed.tensor import DTensor
from transformers import Trainer

from almost.cli import main


def fsdp_on_cpu(init):
    """AcceleratorState.__init__, then the type FSDP where accelerate chose MULTI_CPU and dropped the plugin."""

    def init_then_fsdp(self, *args, **kwargs):
        init(self, *args, **kwargs)
        plugin = kwargs.get("fsdp_plugin")
        if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = plugin
            # Every later AcceleratorState() copies the type back from PartialState's shared state.
            accelerate.state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    return init_then_fsdp


def reporting(train, stall_at: str | None):
    """Trainer.train that stalls before step ``stall_at`` + 1 if given, and says afterwards, on every
    process, how the model was trained (the test checks that FSDP2 sharded it)."""

    def train_and_report(self, *args, **kwargs):
        if stall_at:
            self.add_callback(StallAt(int(stall_at)))
        result = train(self, *args, **kwargs)
        weight = self.model.get_input_embeddings().weight
        local = weight.to_local() if isinstance(weight, DTensor) else weight
        print(
            f"fsdp_on_cpu: rank {self.accelerator.process_index} trained {type(self.model_wrapped).__name__} as "
            f"{self.accelerator.distributed_type.value}, embedding rows {local.shape[0]} of {weight.shape[0]}",
            flush=True,
        )
        return result

    return train_and_report


if __name__ == "__main__":
    if os.environ.get("FSDP_VERSION") != "2":
        sys.exit("fsdp_on_cpu.py: launch it with an FSDP2 accelerate config (configs/accelerate/cpu_fsdp.yaml)")
    accelerate.state.AcceleratorState.__init__ = fsdp_on_cpu(accelerate.state.AcceleratorState.__init__)
    Trainer.train = reporting(Trainer.train, os.environ.get("ALMOST_TEST_STALL_AT"))
    sys.exit(main(sys.argv[1:]))
