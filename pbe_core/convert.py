"""Convert a Paint-by-Example model to the one .safetensors file the example workflows expect.

    python -m pbe_core.convert SOURCE DEST [--dtype fp16|bf16|fp32] [--overwrite]

SOURCE is the authors' ``model.ckpt`` (12.6 GB with its training state), a ``.safetensors`` of it
in any float dtype, or a diffusers ``PaintByExamplePipeline`` folder. DEST gets the authors'
single-file layout (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.*``, ``proj_out.*``, ``learnable_vector``) without EMA copies, optimizer or
training state: about 2.6 GB in fp16 (the default), 5.2 GB in fp32.

The input is read through the loader's own reader, so a file the nodes would refuse is refused
here with the same message. The output is written tensor by tensor and each input tensor's
memory-mapped pages are handed back once written, so the peak resident memory stays near one
tensor plus the program itself, not the model's size. It is written under a temporary name in
DEST's folder, flushed to disk, read back and compared with the source, and only then renamed to
DEST: a failure or crash never leaves a partial file under DEST's name.

Exit status: 0 written; 2 refused (the input is not a Paint-by-Example model, DEST exists, bad
arguments); 1 failed while writing or verifying (nothing is left behind).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from . import layouts, ldm_names, safetensors_writer
from .checkpoint import PaintByExampleWeights, read_checkpoint
from .errors import CheckpointError
from .file_pages import release_file_pages

log = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DEFAULT_DTYPE = "fp16"


class ConversionError(Exception):
    """The conversion was refused (``status`` 2) or failed (``status`` 1); the message says why."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


@dataclass
class Conversion:
    dest: Path
    dtype: str
    tensors: int
    nbytes: int
    seconds: float


def convert(source: str | os.PathLike, dest: str | os.PathLike, dtype: str = DEFAULT_DTYPE,
            overwrite: bool = False, progress: bool = False) -> Conversion:
    """Convert ``source`` to the single .safetensors file ``dest`` (see the module docstring).

    Raises :class:`CheckpointError` for an input that is not a Paint-by-Example model and
    :class:`ConversionError` for everything else; on any failure ``dest`` is untouched and no
    temporary file is left."""
    started = time.perf_counter()
    source, dest = Path(source), Path(dest)
    if dtype not in DTYPES:
        raise ConversionError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}", status=2)
    _check_dest(source, dest, overwrite)
    weights = read_checkpoint(source)
    sources = single_file_tensors(weights)
    target = DTYPES[dtype]
    entries = safetensors_writer.plan({name: (_output_dtype(t, target), tuple(t.shape)) for name, t in sources.items()})
    metadata = {"format": "pt", "converted_from": source.name, "dtype": dtype}
    data = entries[-1].end if entries else 0
    nbytes = len(safetensors_writer.header(entries, metadata)) + data
    _check_space(dest, nbytes)

    fd, temporary = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    temporary = Path(temporary)
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; DEST gets the usual mode
        with os.fdopen(fd, "wb") as f:
            _write(f, entries, sources, target, metadata, _Progress("writing", data, progress))
            f.flush()
            os.fsync(f.fileno())
        _verify(temporary, entries, sources, target, metadata, _Progress("verifying", data, progress))
        if dest.exists() and not overwrite:  # appeared while converting
            raise ConversionError(f"{dest} appeared while converting; it was left as it is", status=2)
        os.replace(temporary, dest)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(dest.parent)
    return Conversion(dest, dtype, len(entries), nbytes, time.perf_counter() - started)


def single_file_tensors(weights: PaintByExampleWeights) -> dict[str, torch.Tensor]:
    """The model's weights under the authors' single-file names (LDM UNet and VAE)."""
    unet, vae = weights.unet, weights.vae
    if weights.weights_format == "diffusers":
        unet, vae = ldm_names.unet_to_ldm(unet), ldm_names.vae_to_ldm(vae)
    return layouts.join_single_file(unet, vae, weights.encoder)


def _output_dtype(tensor: torch.Tensor, target: torch.dtype) -> torch.dtype:
    return target if tensor.is_floating_point() else tensor.dtype


def _converted(tensor: torch.Tensor, target: torch.dtype) -> torch.Tensor:
    return tensor.to(_output_dtype(tensor, target))


def _check_dest(source: Path, dest: Path, overwrite: bool) -> None:
    if dest.suffix.lower() != ".safetensors":
        raise ConversionError(f"DEST must be a .safetensors file name, got {dest.name}", status=2)
    if not dest.parent.is_dir():
        raise ConversionError(f"the folder {dest.parent} does not exist: create it first", status=2)
    if dest.is_dir():
        raise ConversionError(f"{dest} is a folder: give a file name for DEST", status=2)
    if dest.exists():
        if source.exists() and os.path.samefile(source, dest):
            raise ConversionError(f"SOURCE and DEST are the same file ({dest}): choose another DEST", status=2)
        if not overwrite:
            raise ConversionError(f"{dest} already exists: choose another name, or pass --overwrite to replace it",
                                  status=2)


def _check_space(dest: Path, nbytes: int) -> None:
    free = shutil.disk_usage(dest.parent).free
    if free < nbytes + (64 << 20):
        raise ConversionError(f"not enough free disk space in {dest.parent}: the output needs {_size(nbytes)}, "
                              f"{_size(free)} is free")


def _write(file, entries, sources, target, metadata, progress: "_Progress") -> None:
    used = _UsedPages()

    def written(entry, tensor):
        used.add(sources[entry.name])  # the source's pages are no longer needed
        progress.update(entry.nbytes)

    try:
        safetensors_writer.write(file, entries, lambda e: _converted(sources[e.name], target), metadata, written)
    finally:
        used.release()
        progress.close()


def _verify(path: Path, entries, sources, target, metadata, progress: "_Progress") -> None:
    """Read the written file back with safetensors' own reader and compare every tensor, bit for
    bit, with the source cast to the output dtype."""
    used = _UsedPages()
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            names = set(f.keys())
            expected = {e.name for e in entries}
            if names != expected:
                raise ConversionError(f"verification failed: the written file has {len(names)} tensors, "
                                      f"{len(expected)} were written ({_short(names ^ expected)} differ)")
            if f.metadata() != metadata:
                raise ConversionError(f"verification failed: the written metadata is {f.metadata()}, not {metadata}")
            for entry in entries:
                written = f.get_tensor(entry.name)
                source = sources[entry.name]
                if written.dtype != entry.dtype or tuple(written.shape) != entry.shape:
                    raise ConversionError(f"verification failed: {entry.name} was read back as {written.dtype} "
                                          f"{tuple(written.shape)}, not {entry.dtype} {entry.shape}")
                if not _same_bits(written, _converted(source, target)):
                    raise ConversionError(f"verification failed: {entry.name} as read back differs from the source "
                                          "(a disk or memory fault?); nothing was written to DEST")
                used.add(written, source)
                progress.update(entry.nbytes)
    finally:
        used.release()
        progress.close()


class _UsedPages:
    """Tensors whose file pages can go, handed back in batches of about 64 MiB: few enough calls
    (each reads /proc/self/maps), small enough not to matter for the peak."""

    BATCH = 64 << 20

    def __init__(self):
        self.tensors, self.nbytes = [], 0

    def add(self, *tensors: torch.Tensor) -> None:
        self.tensors.extend(tensors)
        self.nbytes += sum(t.numel() * t.element_size() for t in tensors)
        if self.nbytes >= self.BATCH:
            self.release()

    def release(self) -> None:
        release_file_pages(self.tensors)
        self.tensors, self.nbytes = [], 0


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.contiguous().reshape(-1), b.contiguous().reshape(-1)
    return a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def _umask() -> int:
    try:  # Linux states it; elsewhere read it by setting it (briefly process-wide)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); other systems have no directory handles to sync."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _short(names) -> str:
    names = sorted(names)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


class _Progress:
    """Bytes done, as a tqdm bar on a terminal, else a plain line every 10 %."""

    def __init__(self, what: str, total: int, enabled: bool):
        self.what, self.total, self.done, self.bar, self.reported = what, total, 0, None, 0
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=what, unit="B", unit_scale=True, unit_divisor=1024,
                                dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                pass

    def update(self, nbytes: int) -> None:
        self.done += nbytes
        if self.bar is not None:
            self.bar.update(nbytes)
        elif self.enabled and self.total:
            tenth = self.done * 10 // self.total
            if tenth > self.reported:
                self.reported = tenth
                log.info("%s: %3d %% (%s of %s)", self.what, tenth * 10, _size(self.done), _size(self.total))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pbe_core.convert",
        description="Convert a Paint-by-Example model (the authors' model.ckpt, a .safetensors of it, or a "
                    "diffusers folder) to one .safetensors file in the authors' layout, without training state.",
    )
    parser.add_argument("source", help="model.ckpt, a .safetensors file, or a diffusers PaintByExamplePipeline folder")
    parser.add_argument("dest", help="the .safetensors file to write, e.g. "
                                     "ComfyUI/models/checkpoints/paint_by_example.safetensors")
    parser.add_argument("--dtype", choices=list(DTYPES), default=DEFAULT_DTYPE,
                        help="precision of the written weights (default fp16: about 2.6 GB; fp32: 5.2 GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        result = convert(args.source, args.dest, args.dtype, args.overwrite, progress=True)
    except CheckpointError as e:
        log.error("error: %s", e)
        return 2
    except ConversionError as e:
        log.error("error: %s", e)
        return e.status
    except KeyboardInterrupt:
        log.error("interrupted: nothing was written to %s", args.dest)
        return 130
    except OSError as e:
        log.error("error: %s: %s", e.filename or args.dest, e.strerror or e)
        return 1
    log.info("wrote %s: %d tensors, %s, %s, verified, in %.0f s", result.dest, result.tensors,
             _size(result.nbytes), result.dtype, result.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
