"""release_file_pages: a memory-mapped file's pages leave the process, values never change, and
anonymous memory (or a page written to) is never dropped."""

from __future__ import annotations

import sys

import pytest
import torch

from pbe_core import file_pages
from pbe_core.file_pages import FileMapping, release_file_pages

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page release is Linux-only")
SIZE = 48 << 20  # bytes per test tensor: far above page-size noise


def _rss_file() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile line")


@pytest.fixture
def mapped(tmp_path):
    """A tensor memory-mapped from a checkpoint (as the loader reads .ckpt files), and its values."""
    values = torch.randn(SIZE // 4, generator=torch.Generator().manual_seed(0))
    torch.save({"w": values, "small": torch.ones(3)}, tmp_path / "w.ckpt")
    return torch.load(tmp_path / "w.ckpt", mmap=True, weights_only=True)["w"], values


@linux_only
def test_resident_file_pages_are_released_and_values_unchanged(mapped):
    tensor, values = mapped
    assert torch.equal(tensor, values)  # reads every page
    before = _rss_file()
    released = release_file_pages([tensor])
    after = _rss_file()
    assert released >= SIZE
    assert before - after > 0.9 * SIZE, (before, after)
    assert torch.equal(tensor, values)  # read back from the file


@linux_only
def test_anonymous_tensors_are_never_touched():
    tensor = torch.randn(SIZE // 4)
    copy = tensor.clone()
    assert release_file_pages([tensor, copy[10:], torch.ones(3)]) == 0
    assert torch.equal(tensor, copy)


@linux_only
def test_pages_written_to_are_kept(mapped):
    tensor, values = mapped
    tensor[:100] = 7.0  # copy-on-write: these pages now exist only in this process
    tensor[-100:] = -7.0
    released = release_file_pages([tensor])
    assert 0 < released < SIZE
    assert torch.all(tensor[:100] == 7.0) and torch.all(tensor[-100:] == -7.0)
    assert torch.equal(tensor[100:-100], values[100:-100])


@linux_only
def test_views_and_mixed_lists(mapped):
    tensor, values = mapped
    view = tensor[1000:].view(-1, 8)[::2]  # strided view of a mapped tensor
    assert release_file_pages([view, torch.zeros(10), torch.empty(0)]) > 0
    assert torch.equal(tensor, values)


def test_span_is_clipped_to_its_mapping_and_needs_one_mapping(monkeypatch):
    page = file_pages.PAGE
    mapping = FileMapping(100 * page, 110 * page, shared=False, path="/models/model.ckpt")
    advised = []
    monkeypatch.setattr(file_pages, "file_mappings", lambda: [mapping])
    monkeypatch.setattr(file_pages, "_clean_runs", lambda first, last, m: [(first, last)])
    monkeypatch.setattr(file_pages, "_madvise", lambda start, length: advised.append((start, length)) or True)
    monkeypatch.setattr(file_pages, "_span", lambda t: t)  # spans given directly
    monkeypatch.setattr(sys, "platform", "linux")
    # inside, not page aligned: rounded out to whole pages
    assert release_file_pages([(100 * page + 10, 101 * page + 10)]) == 2 * page
    assert advised[-1] == (100 * page, 2 * page)
    # reaching past the mapping (into what may be anonymous memory): not released at all
    assert release_file_pages([(109 * page, 111 * page)]) == 0
    assert release_file_pages([(50 * page, 51 * page)]) == 0


def test_written_pages_split_the_runs(monkeypatch):
    page = file_pages.PAGE
    present_file = file_pages._PRESENT | file_pages._FILE_OR_SHARED
    flags = [present_file, 0, file_pages._PRESENT, present_file, file_pages._SWAPPED, present_file]
    monkeypatch.setattr(file_pages, "_page_flags", lambda first, last: flags)
    mapping = FileMapping(0, 6 * page, shared=False, path="/x")
    assert file_pages._clean_runs(0, 6 * page, mapping) == [(0, 2 * page), (3 * page, 4 * page), (5 * page, 6 * page)]


def test_other_systems_do_nothing(monkeypatch, mapped):
    monkeypatch.setattr(sys, "platform", "win32")
    assert release_file_pages([mapped[0]]) == 0


@linux_only
def test_device_mappings_and_anonymous_regions_are_not_file_mappings():
    mappings = file_pages.file_mappings()
    assert mappings and all(m.path.startswith("/") and not m.path.startswith("/dev/zero") for m in mappings)
    heap = torch.randn(1 << 20)
    assert not any(m.start <= heap.data_ptr() < m.end for m in mappings)


@linux_only
def test_a_cast_reads_the_mappings_once_and_hands_back_every_batch(mapped, monkeypatch):
    """cast_releasing_pages hands the file's pages back batch by batch, reading this process's
    mappings once for all of them."""
    tensor, values = mapped
    parts = {f"w{i}": tensor.view(4, -1)[i] for i in range(4)}  # four 12 MiB tensors of one file
    reads, real = [], file_pages.file_mappings
    monkeypatch.setattr(file_pages, "file_mappings", lambda: reads.append(1) or real())
    released = []
    real_release = file_pages.release_file_pages
    monkeypatch.setattr(file_pages, "release_file_pages",
                        lambda tensors, mappings=None: released.append(real_release(tensors, mappings)))
    before = _rss_file()
    cast = file_pages.cast_releasing_pages(parts, torch.bfloat16, batch_bytes=8 << 20)
    assert len(released) >= 4 and all(count >= (12 << 20) for count in released[:4]), "every batch handed back"
    assert len(reads) == 1, "the mappings are read once per cast, not once per batch"
    assert _rss_file() <= before + (1 << 20), "the file pages read for the cast left again"
    assert all(torch.equal(cast[f"w{i}"], values.view(4, -1)[i].to(torch.bfloat16)) for i in range(4))
