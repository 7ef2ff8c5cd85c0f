"""The README's troubleshooting table lists every error message the pack can show, and nothing else
(tools/error_messages.py reads the messages from the source)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("pbe_error_messages", ROOT / "tools" / "error_messages.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _table(tool):
    return tool.table_phrases((ROOT / "README.md").read_text(encoding="utf-8"))


def test_every_message_is_in_the_table():
    tool = _tool()
    missing = tool.uncovered(tool.messages(), _table(tool))
    assert not missing, "README's Troubleshooting table lacks:\n" + "\n".join(f"{m.where}: {m.text}" for m in missing)


def test_every_phrase_of_the_table_is_a_message():
    tool = _tool()
    stale = tool.stale(tool.messages(), _table(tool))
    assert not stale, "README's Troubleshooting table names messages the pack no longer has:\n" + "\n".join(stale)


def test_the_reader_finds_the_messages_that_matter():
    """Messages made in every way the pack makes them are found: a plain raise, a message-building
    function, an f-string's fixed words around the filled-in parts, a module constant."""
    texts = [m.text for m in _tool().messages()]
    assert any(t.startswith("mask: no mask was painted on the source") for t in texts)  # a raise
    assert any("is an HTML page saved by a browser" in t for t in texts)  # returned by a message builder
    assert any("it is cut short" in t for t in texts)  # passed to a message builder
    assert any(t.startswith("EasyCache does not work") for t in texts)  # a module constant
    assert "…: … is out of range; use a value from … to …" in texts  # f-string with filled-in parts
    assert not any(t.startswith("internal:") for t in texts)


def test_a_new_message_or_a_stale_phrase_fails(tmp_path):
    tool = _tool()
    messages, rows = tool.messages(), _table(tool)
    new = tool.Message("nodes/x.py:1", "reference: the frobnicator is out of sync; restart it")
    assert tool.uncovered(messages + [new], rows) == [new]
    stale_row = ("| `the frobnicator is out of sync` | … | … |", ["the frobnicator is out of sync"])
    assert tool.stale(messages, rows + [stale_row]) == ["'the frobnicator is out of sync': no message of the pack "
                                                       "contains it"]
    assert tool.stale(messages, [("| `is empty` |", ["is empty"])])[0].endswith("too short (at least 12 characters)")
