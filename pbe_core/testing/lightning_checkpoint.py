"""What the authors' ``model.ckpt`` holds besides the weights, for random test checkpoints.

A PyTorch Lightning 1.4 training checkpoint of LDM's ``LatentDiffusion``: ``state_dict`` with the
weights, an EMA copy of every UNet parameter (``model_ema.*``, LDM's ``LitEma`` naming) and the
noise-schedule buffers; ``callbacks`` keyed by Lightning's ``ModelCheckpoint`` class; loop
progress; AdamW state for the trained parameters; the LambdaLR scheduler state. It is pickled as
Lightning and numpy 1.x pickled it, so readers are tested against the globals the real file names.
"""

from __future__ import annotations

import contextlib
import copyreg
import math
import os
import sys
import tempfile
import types
from collections import OrderedDict
from pathlib import Path

import numpy
import torch

from .. import layouts

LIGHTNING_VERSION = "1.4.2"
MODEL_CHECKPOINT = "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"
GLOBAL_STEP, EPOCH = 40_000, 39
_FILE_BACKED_ABOVE = 1 << 30  # bytes of training state above which it lives in a scratch file


def save(path: str | Path, weights: dict[str, torch.Tensor], optimizer_state: bool = True) -> Path:
    """Write ``weights`` (the authors' single-file names) as a Lightning training checkpoint.

    ``optimizer_state=False`` leaves out the AdamW state (about 7 GB for the full-size model)."""
    path = Path(path)
    trainable = [k for k in weights if _is_trained(k)]
    nbytes = sum(_nbytes(weights[k]) + 64 for k in weights if k.startswith(layouts.UNET_PREFIX))
    if optimizer_state:
        nbytes += 2 * sum(_nbytes(weights[k]) + 64 for k in trainable)
    memory = _ScratchMemory(path.parent, nbytes)
    with _pickled_like_lightning_1_4() as model_checkpoint:
        checkpoint = {
            "epoch": EPOCH,
            "global_step": GLOBAL_STEP,
            "pytorch-lightning_version": LIGHTNING_VERSION,
            "state_dict": _state_dict(weights, memory),
            "callbacks": {model_checkpoint: _model_checkpoint_state()},
            "loops": _loop_state(),
            "optimizer_states": [_adamw_state(weights, trainable, memory)] if optimizer_state else [],
            "lr_schedulers": [_lambda_lr_state()],
        }
        torch.save(checkpoint, str(path))
    return path


def ema_name(key: str) -> str:
    """LDM's ``LitEma`` buffer name for a UNet weight: the name after ``model.``, dots removed."""
    return "model_ema." + key[len("model."):].replace(".", "")


def _is_trained(key: str) -> bool:
    # Paint-by-Example's configure_optimizers: UNet, final_ln, mapper, proj_out, learnable_vector
    return key == layouts.UNCOND_KEY or key.startswith(
        (layouts.UNET_PREFIX, layouts.FINAL_LN_PREFIX, layouts.MAPPER_PREFIX, layouts.PROJ_OUT_PREFIX))


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _state_dict(weights: dict[str, torch.Tensor], memory: "_ScratchMemory") -> OrderedDict:
    state = OrderedDict(weights)
    state.update(_schedule_buffers())
    for key, value in weights.items():
        if key.startswith(layouts.UNET_PREFIX):
            state[ema_name(key)] = memory.empty(value.shape, value.dtype).copy_(value)
    state["model_ema.decay"] = torch.tensor(0.9999, dtype=torch.float32)
    state["model_ema.num_updates"] = torch.tensor(GLOBAL_STEP, dtype=torch.int32)
    return state


def _schedule_buffers() -> dict[str, torch.Tensor]:
    """LDM's ``register_schedule`` for the "linear" schedule (0.00085 -> 0.012, 1000 steps)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_variance = betas * (1 - previous) / (1 - alphas_cumprod)
    buffers = {
        "betas": betas, "alphas_cumprod": alphas_cumprod, "alphas_cumprod_prev": previous,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * previous.sqrt() / (1 - alphas_cumprod),
        "posterior_mean_coef2": (1 - previous) * (1 - betas).sqrt() / (1 - alphas_cumprod),
    }
    return {k: v.float() for k, v in buffers.items()}


def _model_checkpoint_state() -> dict:
    folder = "/logs/2022-10-11T00-00-00_v1/checkpoints"
    return {
        "monitor": "val/loss_simple_ema",
        "best_model_score": torch.tensor(0.1283),
        "best_model_path": f"{folder}/epoch={EPOCH:06d}.ckpt",
        "current_score": numpy.float64(0.1301),  # Lightning keeps some scores as numpy scalars
        "dirpath": folder,
        "best_k_models": {f"{folder}/epoch={EPOCH:06d}.ckpt": torch.tensor(0.1283)},
        "kth_best_model_path": f"{folder}/epoch={EPOCH:06d}.ckpt",
        "kth_value": torch.tensor(0.1283),
        "last_model_path": f"{folder}/last.ckpt",
    }


def _loop_state() -> dict:
    progress = {"ready": GLOBAL_STEP, "started": GLOBAL_STEP, "processed": GLOBAL_STEP, "completed": GLOBAL_STEP}
    return {"fit_loop": {
        "state_dict": {},
        "epoch_progress": {"total": {k: EPOCH + 1 for k in progress}, "current": {k: EPOCH + 1 for k in progress}},
        "epoch_loop.state_dict": {"_batches_that_stepped": GLOBAL_STEP},
        "epoch_loop.batch_progress": {"total": progress, "current": dict(progress), "is_last_batch": False},
        "epoch_loop.optimizer_loop.optim_progress": {"optimizer": {"step": {"total": progress}}},
    }}


def _adamw_state(weights: dict[str, torch.Tensor], trainable: list[str], memory: "_ScratchMemory") -> dict:
    state = {}
    for index, key in enumerate(trainable):
        weight = weights[key]
        exp_avg = torch.mul(weight, 1e-3, out=memory.empty(weight.shape, weight.dtype))
        exp_avg_sq = torch.mul(exp_avg, exp_avg, out=memory.empty(weight.shape, weight.dtype))
        state[index] = {"step": GLOBAL_STEP, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    return {"state": state, "param_groups": [{
        "lr": 1e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False,
        "initial_lr": 1e-5, "params": list(range(len(trainable))),
    }]}


def _lambda_lr_state() -> dict:
    """``LambdaLR(LambdaLinearScheduler)``: torch stores a callable object's ``__dict__``."""
    return {
        "base_lrs": [1e-5], "last_epoch": GLOBAL_STEP, "verbose": False, "_step_count": GLOBAL_STEP + 1,
        "_get_lr_called_within_step": False, "_last_lr": [1e-5],
        "lr_lambdas": [{"lr_warm_up_steps": [1000], "f_start": [1e-6], "f_min": [1.0], "f_max": [1.0],
                        "cycle_lengths": [10_000_000_000_000], "last_f": 1.0, "verbosity_interval": 0,
                        "cum_cycles": [0, 10_000_000_000_000]}],
    }


class _ScratchMemory:
    """Where the EMA and optimizer tensors live while the checkpoint is written: ordinary memory
    for a small model; for the full size (about 11 GB) an unlinked scratch file next to the
    checkpoint, whose pages the system writes out and drops instead of holding them all in RAM."""

    def __init__(self, folder: Path, nbytes: int):
        self.storage, self.offset = None, 0
        if nbytes > _FILE_BACKED_ABOVE:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=folder, prefix=".pbe_training_state_")
            os.close(fd)
            try:
                self.storage = torch.UntypedStorage.from_file(name, True, nbytes)
            finally:
                os.unlink(name)  # the mapping keeps the space until the storage is freed

    def empty(self, shape, dtype: torch.dtype) -> torch.Tensor:
        if self.storage is None:
            return torch.empty(shape, dtype=dtype)
        shape = tuple(shape)
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        start, self.offset = self.offset, self.offset + (nbytes + 63) // 64 * 64
        strides = [1] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            strides[i] = strides[i + 1] * shape[i + 1]
        # a slice of the storage is its own storage to torch.save: one record per tensor, as in the real file
        return torch.empty(0, dtype=dtype).set_(self.storage[start:start + nbytes], 0, shape, tuple(strides))


@contextlib.contextmanager
def _pickled_like_lightning_1_4():
    """While saving: Lightning's ``ModelCheckpoint`` importable under its real name (the key of the
    callback state is the class itself), and numpy scalars written under numpy 1.x's name
    ``numpy.core.multiarray.scalar`` (numpy 2 writes ``numpy._core``). Nothing stays installed."""
    module_names = MODEL_CHECKPOINT.rsplit(".", 1)[0].split(".")
    lightning = [".".join(module_names[:i + 1]) for i in range(len(module_names))]
    replaced = lightning + ["numpy.core.multiarray"]
    before = {name: sys.modules.get(name) for name in replaced}
    fakes = {name: types.ModuleType(name) for name in lightning}
    model_checkpoint = type("ModelCheckpoint", (), {"__module__": lightning[-1]})
    fakes[lightning[-1]].ModelCheckpoint = model_checkpoint

    real_scalar = numpy.float64(0).__reduce__()[0]

    def scalar(*args):
        return real_scalar(*args)

    scalar.__module__, scalar.__qualname__ = "numpy.core.multiarray", "scalar"
    fakes["numpy.core.multiarray"] = types.ModuleType("numpy.core.multiarray")
    fakes["numpy.core.multiarray"].scalar = scalar
    reducer_before = copyreg.dispatch_table.get(numpy.float64)
    sys.modules.update(fakes)
    copyreg.dispatch_table[numpy.float64] = lambda value: (scalar, value.__reduce__()[1])
    try:
        yield model_checkpoint
    finally:
        if reducer_before is None:
            copyreg.dispatch_table.pop(numpy.float64, None)
        else:
            copyreg.dispatch_table[numpy.float64] = reducer_before
        for name, module in before.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
