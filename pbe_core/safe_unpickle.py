"""Unpickling PyTorch checkpoints without running code, on every torch the pack supports (2.1+).

A pickle can name any Python function and have it called while loading; a weights file only needs
the functions that rebuild tensors. How to allow exactly those (plus the harmless objects training
checkpoints carry) depends on the installed torch:

- 2.5+: torch's weights-only unpickler with :func:`torch.serialization.safe_globals` (scoped);
- 2.4: the same unpickler with ``add_safe_globals`` (process-wide; ComfyUI registers a similar
  Lightning stand-in there itself);
- 2.1-2.3: no allow-list API, so torch is given a restricted pickle module whose ``find_class``
  returns only the objects below and refuses everything else;
- older: refused with the version named (the pack needs ``torch.load(mmap=)``, new in 2.1).

The allow-list API matches a global by ``f"{obj.__module__}.{obj.__qualname__}"`` on every version,
so each stand-in carries the module and name of what it stands in for.
"""

from __future__ import annotations

import importlib
import pickle
import re
import types
import warnings
from collections import OrderedDict

import torch

MINIMUM_TORCH = (2, 1)
ALLOW_LIST_TORCH = (2, 4)  # first torch with torch.serialization.add_safe_globals


class TorchTooOld(RuntimeError):
    """The installed torch cannot read checkpoints safely and memory-mapped."""


def torch_version() -> tuple[int, int]:
    """(major, minor) of the installed torch; tests replace this to simulate other versions."""
    match = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def reading_mode() -> str:
    """"safe_globals", "add_safe_globals" or "restricted_unpickler"; raises :class:`TorchTooOld`."""
    version = torch_version()
    if version < MINIMUM_TORCH:
        raise TorchTooOld(
            f"PyTorch {torch.__version__} is installed, but this pack needs PyTorch "
            f"{MINIMUM_TORCH[0]}.{MINIMUM_TORCH[1]} or newer to read checkpoints (it memory-maps them and "
            "loads them without running code in the file). Update the PyTorch that ComfyUI runs on."
        )
    serialization = torch.serialization
    if version < ALLOW_LIST_TORCH or not hasattr(serialization, "add_safe_globals"):
        return "restricted_unpickler"
    return "safe_globals" if hasattr(serialization, "safe_globals") else "add_safe_globals"


def load(path: str, mmap: bool):
    """``torch.load`` of ``path`` to the CPU that never runs code from the file.

    Raises :class:`TorchTooOld`, or ``pickle.UnpicklingError`` (see :func:`is_refusal`) for a file
    that names anything but tensors and the allowed objects; other errors come from torch as they are.
    """
    mode = reading_mode()
    if mode == "safe_globals":
        with torch.serialization.safe_globals(allowed_objects()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    if mode == "add_safe_globals":
        _register_process_wide()
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    return torch.load(path, map_location="cpu", pickle_module=RESTRICTED_PICKLE, weights_only=False, mmap=mmap)


_REFUSAL_WORDS = ("global", "unrecognized function", "allowlisted", "is blocked", "can only build",
                  "can only create")


def is_refusal(error: BaseException) -> bool:
    """Whether an ``UnpicklingError`` means "the file wants an object that is not allowed"."""
    text = str(error).lower()
    return any(word in text for word in _REFUSAL_WORDS)


def refusal_detail(error: BaseException) -> str:
    for line in str(error).splitlines():
        if any(word in line.lower() for word in _REFUSAL_WORDS):
            return line.strip()
    return "unsupported content"


# ---------------------------------------------------------------------------- what is allowed


class _InertStandIn:
    """Stands in for a harmless class a training checkpoint names (Lightning's ``ModelCheckpoint``
    keys its callback state): nothing is imported or run, and the entry is ignored."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _stand_in(qualified_name: str) -> type:
    module, name = qualified_name.rsplit(".", 1)
    return type(name, (_InertStandIn,), {"__module__": module, "__qualname__": name})


LIGHTNING_STAND_INS = (
    _stand_in("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    _stand_in("lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint"),
)


def _alias(function, qualified_name: str):
    """``function`` under another name (numpy 2 moved ``numpy.core`` to ``numpy._core``; files
    written with numpy 1, like the authors', name the old place)."""
    module, name = qualified_name.rsplit(".", 1)

    def alias(*args):
        return function(*args)

    alias.__module__, alias.__qualname__, alias.__name__ = module, name, name
    return alias


def _numpy_objects() -> dict[str, object]:
    """numpy scalars as Lightning pickles them (the set ComfyUI's comfy/utils.py also allows),
    where this numpy has them."""
    try:
        import numpy
    except ImportError:
        return {}
    out: dict[str, object] = {"numpy.dtype": numpy.dtype}
    scalar = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy 2 deprecates importing numpy.core
        for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
            try:
                scalar = getattr(importlib.import_module(module), "scalar")
                break
            except (ImportError, AttributeError):
                continue
    if scalar is not None:
        for name in ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"):
            real = f"{scalar.__module__}.{scalar.__qualname__}" == name
            out[name] = scalar if real else _alias(scalar, name)
    for kind in ("float64", "float32", "int64"):
        cls = type(numpy.dtype(kind))  # BUILD sets a dtype's state on an instance of this class
        out[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return out


def allowed_objects() -> list:
    """Everything besides torch's own tensor machinery that may appear in a Paint-by-Example
    checkpoint, each under the name a pickle uses for it."""
    from _codecs import encode  # how protocol-2 pickles write bytes (numpy scalars' data)

    objects = list(LIGHTNING_STAND_INS) + [encode]
    objects += [obj for obj in _numpy_objects().values() if obj not in objects]
    return objects


_registered = False


def _register_process_wide() -> None:
    global _registered
    if not _registered:
        torch.serialization.add_safe_globals(allowed_objects())
        _registered = True


# ---------------------------------------------------------------------------- torch 2.1 - 2.3

_TENSOR_REBUILDERS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                      "_rebuild_parameter_with_state", "_rebuild_meta_tensor_no_storage",
                      "_rebuild_device_tensor_from_cpu_tensor")


def _restricted_globals() -> dict[str, object]:
    import torch._utils as rebuild

    out: dict[str, object] = {
        "collections.OrderedDict": OrderedDict,
        "torch.Size": torch.Size,
        "torch.device": torch.device,
        "torch.Tensor": torch.Tensor,
        "torch.nn.parameter.Parameter": torch.nn.Parameter,
        "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
        "torch.serialization._get_layout": torch.serialization._get_layout,
        "builtins.set": set, "builtins.frozenset": frozenset, "builtins.bytearray": bytearray,
        "builtins.complex": complex,
    }
    out.update({f"torch._utils.{name}": getattr(rebuild, name) for name in _TENSOR_REBUILDERS if hasattr(rebuild, name)})
    out.update({f"torch.{name}": value for name, value in vars(torch).items() if isinstance(value, torch.dtype)})
    for storage in torch._storage_classes:  # torch maps the legacy typed names itself before asking
        out[f"{storage.__module__}.{storage.__name__}"] = storage
        out[f"torch.{storage.__name__}"] = storage
    for obj in allowed_objects():
        out[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return out


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a weights file needs; any other global is refused before it is
    imported, so nothing the file names can run."""

    _allowed: dict[str, object] | None = None

    def find_class(self, module, name):
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _restricted_globals()
        found = _RestrictedUnpickler._allowed.get(f"{module}.{name}")
        if found is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights file")
        return found


def _restricted_load(file, **kwargs):
    return _RestrictedUnpickler(file, **kwargs).load()


# What torch.load(pickle_module=...) needs: Unpickler (subclassed by torch), load (legacy files).
RESTRICTED_PICKLE = types.ModuleType("pbe_core.safe_unpickle.restricted_pickle")
RESTRICTED_PICKLE.Unpickler = _RestrictedUnpickler
RESTRICTED_PICKLE.load = _restricted_load
RESTRICTED_PICKLE.UnpicklingError = pickle.UnpicklingError
