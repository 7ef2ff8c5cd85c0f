"""Peak resident memory of the converter on a random model.ckpt with the full training state.

    python bench/convert_memory.py [--model full|tiny] [--dtypes fp16 fp32] [--work /tmp/pbe_convert_bench]
                                   [--no-optimizer-state] [--compare-without-release] [--keep]

Writes the random model as the authors' Lightning .ckpt (weights, EMA copies, AdamW state,
callbacks, scheduler: about 16 GB at full size) into --work, then runs
``python -m pbe_core.convert`` on it in a child process for each dtype and prints the child's peak
resident memory (its VmHWM, memory-mapped file pages included, reported by the child itself), the output
size, the limit the converter must stay under (output + 2 GiB), the wall time and the input size.
The files are deleted afterwards unless --keep is given. Needs about 16 GB of disk for the input
(+11 GB of scratch while writing it) and 2.6 / 5.2 GB per fp16 / fp32 output at full size.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from pbe_core.testing import random_checkpoint  # noqa: E402

HEADROOM = 2 << 30  # the converter must stay below (output size + 2 GiB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["full", "tiny"], default="full")
    parser.add_argument("--dtypes", nargs="+", choices=["fp16", "bf16", "fp32"], default=["fp16"])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pbe_convert_bench")
    parser.add_argument("--no-optimizer-state", action="store_true",
                        help="leave the AdamW state out of the .ckpt (faster to write, not the real shape)")
    parser.add_argument("--keep", action="store_true", help="keep the written files")
    parser.add_argument("--compare-without-release", action="store_true",
                        help="also run each dtype with the file-page release switched off, to show what it saves")
    args = parser.parse_args()

    created = not args.work.exists()
    args.work.mkdir(parents=True, exist_ok=True)
    source = args.work / f"pbe_{args.model}_random.ckpt"
    try:
        started = time.perf_counter()
        model = random_checkpoint.random_weights(args.model, seed=0)
        random_checkpoint.write_single_file(source, model, optimizer_state=not args.no_optimizer_state)
        del model
        gc.collect()
        print(f"input: {source.name}, {_gib(source.stat().st_size)} (training state "
              f"{'without' if args.no_optimizer_state else 'with'} optimizer), written in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        baseline = _measure("pbe_core.convert", "--help")
        print(f"converter baseline (python + imports): peak {_mib(baseline['peak'])}", flush=True)
        runs = [(dtype, True) for dtype in args.dtypes]
        runs += [(dtype, False) for dtype in args.dtypes if args.compare_without_release]
        for dtype, release in runs:
            dest = args.work / f"pbe_{args.model}_{dtype}.safetensors"
            run = _measure("pbe_core.convert", str(source), str(dest), "--dtype", dtype, "--overwrite",
                           release=release)
            if run["status"] != 0:
                print(run["stderr"][-3000:], file=sys.stderr)
                raise SystemExit(f"the converter failed for {dtype} (exit status {run['status']})")
            output = dest.stat().st_size
            limit = output + HEADROOM
            verdict = "within" if run["peak"] < limit else "OVER"
            label = dtype if release else f"{dtype} WITHOUT page release (comparison only)"
            print(f"{label}: peak resident {_mib(run['peak'])} (file-backed at most {_mib(run['file'])}, "
                  f"anonymous at most {_mib(run['anon'])}); output {_gib(output)}; limit (output + 2 GiB) "
                  f"{_mib(limit)}: {verdict} the limit by {_mib(abs(limit - run['peak']))}; wall {run['wall']:.0f} s; "
                  f"input {_gib(source.stat().st_size)}", flush=True)
            if not args.keep:
                dest.unlink()
    finally:
        if not args.keep:
            source.unlink(missing_ok=True)
            for dtype in args.dtypes:
                (args.work / f"pbe_{args.model}_{dtype}.safetensors").unlink(missing_ok=True)
            if created:
                args.work.rmdir()  # only a folder this run made (and emptied)


# Runs a module as ``python -m`` would and reports the process's own VmHWM (peak resident set,
# file-backed pages included) as its last stderr line. (wait4's ru_maxrss is no good here: Linux
# carries the parent's peak over fork+exec into the child's figure.)
_REPORTING_PEAK = """
import atexit, runpy, sys
def report():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            sys.stderr.write('\\nPEAK_KIB ' + line.split()[1] + '\\n')
atexit.register(report)
if sys.argv[1] == '--no-release':  # the comparison: the converter as it would be without the release
    import pbe_core.file_pages  # (run_module executes a fresh copy of the converter, which imports this name)
    pbe_core.file_pages.release_file_pages = lambda tensors: 0
    del sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
"""


def _measure(module: str, *args: str, release: bool = True) -> dict:
    """Run ``python -m module args`` from the repository root; its own peak RSS (VmHWM) and the
    largest file-backed / anonymous resident sizes seen by polling /proc while it ran."""
    started = time.perf_counter()
    switch = [] if release else ["--no-release"]
    child = subprocess.Popen([sys.executable, "-c", _REPORTING_PEAK, *switch, module, *args], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = {"file": 0, "anon": 0}
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.append(child.stderr.read()), daemon=True)
    reader.start()
    while child.poll() is None:
        _poll(child.pid, seen)
        time.sleep(0.1)
    reader.join()
    text = "".join(stderr)
    peaks = [int(line.split()[1]) for line in text.splitlines() if line.startswith("PEAK_KIB ")]
    return {"status": child.returncode, "peak": peaks[-1] * 1024 if peaks else 0,
            "wall": time.perf_counter() - started, "stderr": text, **seen}


def _poll(pid: int, seen: dict) -> None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssFile:"):
                    seen["file"] = max(seen["file"], int(line.split()[1]) * 1024)
                elif line.startswith("RssAnon:"):
                    seen["anon"] = max(seen["anon"], int(line.split()[1]) * 1024)
    except OSError:
        pass


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.0f} MiB"


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


if __name__ == "__main__":
    main()
