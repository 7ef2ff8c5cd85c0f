"""Reading tensors from files safely: safetensors, or pickles in weights-only mode.

Never unpickles arbitrary objects (a pickle can run code); memory-maps where the format allows,
so the 12.6 GB training checkpoint costs only the weights that are actually used.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import CheckpointError

log = logging.getLogger(__name__)

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")
SUPPORTED_EXTENSIONS = SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS


class _InertLightningObject:
    """Stands in for harmless PyTorch Lightning classes named inside training checkpoints.

    The authors' checkpoint keys its callback state by the ``ModelCheckpoint`` class; the
    weights-only unpickler refuses any global it does not know. This inert class is allowed under
    that exact name instead: nothing from Lightning is imported or run, and the entry is ignored.
    """

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _stand_in(qualified_name: str) -> tuple[type, str]:
    return (type(qualified_name.rsplit(".", 1)[1], (_InertLightningObject,), {}), qualified_name)


_LIGHTNING_STAND_INS = [
    _stand_in("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    _stand_in("lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint"),
]


def read_tensors(path: str | os.PathLike, keep=None) -> dict[str, torch.Tensor]:
    """All tensors of a weights file, flattened to ``{name: tensor}`` on the CPU.

    ``keep(name) -> bool`` selects which tensors to read (others are never loaded). Raises
    :class:`CheckpointError` with an explanation for every file that cannot be read safely.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in SAFETENSORS_EXTENSIONS:
        return _read_safetensors(path, keep)
    return _read_pickle(path, keep)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: check the file name and folder")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a model file")
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise CheckpointError(
            f"{path.name} has the extension '{path.suffix}', which is not a model file this pack reads: "
            f"use a .safetensors file (preferred) or a .ckpt/.pt/.pth/.bin checkpoint"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the download or copy failed; get the file again")


def _read_safetensors(path: Path, keep) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys() if keep is None or keep(k)}
    except SafetensorError as e:
        raise CheckpointError(
            f"{path} is not a complete .safetensors file ({e}): it is truncated or corrupt; download it again"
        ) from e


def _read_pickle(path: Path, keep) -> dict[str, torch.Tensor]:
    # Zip-format checkpoints (torch >= 1.6) can be memory-mapped; older ones cannot.
    mmap = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(_LIGHTNING_STAND_INS):
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # A refused global (a class or function the file wants to call) means more than weights;
        # anything else the weights-only unpickler stumbles on is damaged data.
        if "global" in str(e).lower():
            raise CheckpointError(
                f"{path.name} contains Python objects besides weights ({_first_line_about_global(e)}). "
                "Loading such a file could run code, so it is refused. Use a .safetensors version of the "
                "model, or convert this file to .safetensors with a tool you trust."
            ) from e
        raise _corrupt(path, e) from e
    except Exception as e:  # damaged data breaks the unpickler in many ways (IndexError, KeyError, …)
        raise _corrupt(path, e) from e
    return _flatten_tensors(obj, keep)


def _corrupt(path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path} could not be read as a checkpoint ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}): "
        "it is truncated or corrupt; download it again"
    )


def _first_line_about_global(error: Exception) -> str:
    for line in str(error).splitlines():
        if "global" in line.lower():
            return line.strip()
    return "unsupported content"


def _flatten_tensors(obj, keep) -> dict[str, torch.Tensor]:
    """Weights live at the top level or under ``state_dict`` (Lightning); the rest is training state."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"the checkpoint holds a {type(obj).__name__}, not a dictionary of weights")
    return {
        k: v for k, v in obj.items()
        if isinstance(k, str) and isinstance(v, torch.Tensor) and (keep is None or keep(k))
    }
