"""Reading tensors from files safely: safetensors, or pickles without running code in them.

Never unpickles arbitrary objects (a pickle can run code); memory-maps where the format allows,
so the 12.6 GB training checkpoint costs only the weights that are actually used.

Errors are classified honestly: a file is called truncated or corrupt only when that is proven
(a zip without its directory or with a failed checksum, a safetensors header or data cut short).
A file whose content does not match its extension is named for what its first bytes say it is.
Running out of memory, an old torch, a refused Python object and a disk error each say so.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from . import safe_unpickle
from .errors import CheckpointError

log = logging.getLogger(__name__)

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")
SUPPORTED_EXTENSIONS = SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS

CONVERT_COMMAND = "python -m pbe_core.convert"
_SAFETENSORS_MAX_HEADER = 100_000_000  # safetensors' own limit


def read_tensors(path: str | os.PathLike, keep=None) -> dict[str, torch.Tensor]:
    """All tensors of a weights file, flattened to ``{name: tensor}`` on the CPU.

    ``keep(name) -> bool`` selects which tensors to read (others are never loaded). Raises
    :class:`CheckpointError` with an explanation for every file that cannot be read safely.
    """
    path = Path(path)
    _check_file(path)
    kind = _content_kind(path)
    if path.suffix.lower() in SAFETENSORS_EXTENSIONS:
        if kind != "safetensors":
            raise CheckpointError(_mismatch_message(path, kind, "a .safetensors file"))
        return _read_safetensors(path, keep)
    if kind not in ("zip", "pickle"):
        raise CheckpointError(_mismatch_message(path, kind, "a PyTorch checkpoint"))
    return _read_pickle(path, keep, kind)


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


# ---------------------------------------------------------------------------- what a file really is


def _content_kind(path: Path) -> str:
    """"safetensors", "zip", "pickle", "html", "git-lfs" or "unknown", from the first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise CheckpointError(_os_error_message(path, e)) from e
    return content_kind(head)


def content_kind(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04"):
        return "zip"  # torch.save's format since torch 1.6 (the authors' model.ckpt)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"  # a legacy torch.save file or a plain pickle
    if head.startswith(b"version https://git-lfs"):
        return "git-lfs"
    text = head.lstrip(b"\xef\xbb\xbf").lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "html"
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= _SAFETENSORS_MAX_HEADER:
        return "safetensors"
    return "unknown"


def _mismatch_message(path: Path, kind: str, expected: str) -> str:
    convert = f"{CONVERT_COMMAND} {path.name} paint_by_example.safetensors"
    if kind == "zip":
        return (f"{path.name} is a PyTorch checkpoint (a zip archive, like the authors' model.ckpt), not {expected}: "
                f"it was renamed. Rename it back to .ckpt, or convert it with `{convert}`.")
    if kind == "pickle":
        return (f"{path.name} is a legacy PyTorch pickle, not {expected}: it was renamed. Rename it back to "
                f".ckpt, or convert it with `{convert}`.")
    if kind == "safetensors":
        return (f"{path.name} is a .safetensors file with a '{path.suffix}' name: rename it to "
                f"{path.stem}.safetensors and pick it again.")
    if kind == "html":
        return (f"{path.name} is an HTML page saved by a browser, not the model: the download failed (a login, "
                "error or redirect page was saved instead). Download the file itself, e.g. with the download "
                "button on the model page, and check that it has the size the page states.")
    if kind == "git-lfs":
        return (f"{path.name} is a Git LFS pointer (a small text file that stands for the model), not the model: "
                "run `git lfs pull` in the cloned repository, or download the file itself.")
    return (f"{path.name} is not {expected}: its first bytes match no model file format this pack knows "
            "(PyTorch checkpoint or .safetensors). If it should be the model, the file is damaged at its start: "
            "download it again.")


# ---------------------------------------------------------------------------- safetensors


def _read_safetensors(path: Path, keep) -> dict[str, torch.Tensor]:
    _check_safetensors_complete(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys() if keep is None or keep(k)}
    except SafetensorError as e:
        # The header is complete JSON and the data is all there, yet safetensors refuses it.
        raise CheckpointError(
            f"{path} is not a valid .safetensors file ({e}): its header does not match its data, so it was "
            "damaged or written by a faulty tool; download or convert it again"
        ) from e
    except Exception as e:
        raise _classified(path, e) from e


def _check_safetensors_complete(path: Path) -> None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            length = struct.unpack("<Q", f.read(8))[0]
            if 8 + length > size:
                raise CheckpointError(_damaged(path, f"its header should be {length:,} bytes long but the file "
                                                     f"ends after {size - 8:,}: it is cut short"))
            header = f.read(length)
    except OSError as e:
        raise CheckpointError(_os_error_message(path, e)) from e
    try:
        entries = json.loads(header)
        ends = [entry["data_offsets"][1] for name, entry in entries.items() if name != "__metadata__"]
        needed = 8 + length + max(ends, default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise CheckpointError(_damaged(path, f"its header is not valid ({type(e).__name__}: {e})")) from e
    if needed > size:
        raise CheckpointError(_damaged(path, f"its tensors need {needed:,} bytes but the file ends after "
                                             f"{size:,}: it is cut short"))


# ---------------------------------------------------------------------------- pickles


def _read_pickle(path: Path, keep, kind: str) -> dict[str, torch.Tensor]:
    if kind == "zip":
        problem = _zip_problem(path, check_sums=False)
        if problem:
            raise CheckpointError(problem)
    try:
        # Zip-format checkpoints (torch >= 1.6) can be memory-mapped; legacy pickles cannot.
        obj = safe_unpickle.load(str(path), mmap=kind == "zip")
    except safe_unpickle.TorchTooOld as e:
        raise CheckpointError(f"{path.name} cannot be read: {e}") from e
    except pickle.UnpicklingError as e:
        if safe_unpickle.is_refusal(e):
            raise CheckpointError(
                f"{path.name} contains Python objects besides weights ({safe_unpickle.refusal_detail(e)}). "
                "Loading such a file could run code, so it is refused. Use a .safetensors version of the "
                "model, or convert this file to .safetensors with a tool you trust."
            ) from e
        raise _classified(path, e, kind) from e
    except Exception as e:  # classified below: memory, disk, proven damage, or honestly unknown
        raise _classified(path, e, kind) from e
    return _flatten_tensors(obj, keep)


def _zip_problem(path: Path, check_sums: bool) -> str | None:
    """What is wrong with a zip's structure (or, with ``check_sums``, its checksums), else None."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if not any(m.filename == "data.pkl" or m.filename.endswith("/data.pkl") for m in members):
                return (f"{path.name} is a zip archive but not a PyTorch checkpoint (it has no data.pkl): unpack it "
                        "and pick the model file inside, or download the model itself.")
            last = max(members, key=lambda m: m.header_offset)
            with open(path, "rb") as f:
                f.seek(last.header_offset)
                local = f.read(30)
            if len(local) < 30 or not local.startswith(b"PK\x03\x04"):
                return _damaged(path, f"the header of its member {last.filename} is missing")
            end = (last.header_offset + 30 + int.from_bytes(local[26:28], "little")
                   + int.from_bytes(local[28:30], "little") + last.compress_size)
            if end > path.stat().st_size:
                return _damaged(path, f"its member {last.filename} runs past the end of the file")
            if check_sums:
                broken = archive.testzip()
                if broken is not None:
                    return _damaged(path, f"its member {broken} fails its checksum")
    except zipfile.BadZipFile as e:
        return _damaged(path, f"its zip directory is missing or broken ({e}), so the file is cut short or "
                              "overwritten")
    except (zipfile.LargeZipFile, EOFError, ValueError) as e:
        return _damaged(path, f"its zip structure is broken ({e})")
    return None


def _classified(path: Path, error: Exception, kind: str | None = None) -> CheckpointError:
    """The honest message for a file that failed to load with ``error``."""
    if _is_out_of_memory(error):
        return CheckpointError(
            f"There is not enough free memory to read {path.name} ({path.stat().st_size / 1e9:.1f} GB on disk; "
            f"{type(error).__name__}). Close other programs and try again, or convert it once to a half-size "
            f"fp16 .safetensors file (about 2.6 GB for the real model) with `{CONVERT_COMMAND} {path.name} "
            "paint_by_example.safetensors` and load that."
        )
    if isinstance(error, OSError):
        return CheckpointError(_os_error_message(path, error))
    if kind == "zip":
        problem = _zip_problem(path, check_sums=True)
        if problem:
            return CheckpointError(f"{problem} ({_describe(error)})")
        return CheckpointError(
            f"{path.name} could not be read ({_describe(error)}), although the file is complete: its zip "
            "structure and checksums are intact, so downloading it again will not help. It may have been saved "
            f"by a newer PyTorch than the installed {torch.__version__}: update PyTorch, or use a .safetensors "
            "version of the model."
        )
    if kind == "pickle":
        if isinstance(error, EOFError) or "truncated" in str(error).lower():
            return CheckpointError(_damaged(path, f"its pickle data ends early ({_describe(error)})"))
        return CheckpointError(
            f"{path.name} starts like a legacy PyTorch pickle but could not be read as one ({_describe(error)}): "
            "it is damaged or not a model file. Download it again, or use a .safetensors version of the model."
        )
    return CheckpointError(f"{path.name} could not be read ({_describe(error)})")


def _damaged(path: Path, what: str) -> str:
    return f"{path} is damaged: {what}. It is truncated or corrupt; download it again"


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


_OOM_WORDS = ("not enough memory", "can't allocate memory", "cannot allocate memory", "out of memory")


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(error, oom):
        return True
    return isinstance(error, RuntimeError) and any(word in str(error).lower() for word in _OOM_WORDS)


def _os_error_message(path: Path, error: OSError) -> str:
    if isinstance(error, PermissionError):
        return (f"{path} cannot be opened: permission denied. Give your user read access to the file, "
                "or copy it to a folder you own.")
    reason = error.strerror or str(error) or type(error).__name__
    return (f"{path} could not be read from the disk ({reason}): an input/output problem, not a sign that the "
            "file's contents are wrong. Check the disk or network share, then try again.")


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
