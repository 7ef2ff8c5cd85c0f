"""Every error message the pack can show, read from its source, and the README's troubleshooting
table checked against them (tests/test_troubleshooting.py).

A message is the text of a ``raise`` in ``nodes/`` or ``pbe_core/`` (not ``pbe_core/testing``),
with each ``{...}`` of an f-string shown as ``…``. Where a raise passes a call (``_damaged(path,
...)``) or a module-level constant, the strings that function returns or that constant holds are
the messages. A raise that only adds a prefix to another error (``f"{input_name}: {e}"``) shows
that error's message, which is listed where it is raised.

    python tools/error_messages.py    # list them, and what the README's table lacks or names wrongly
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("nodes", "pbe_core")
SKIPPED = ("pbe_core/testing",)  # test machinery: no artist meets its errors
GAP = "…"
MIN_PHRASE = 12  # a README phrase shorter than this would cover messages by accident
TABLE_HEADING = "## Troubleshooting"


@dataclass(frozen=True)
class Message:
    where: str  # file:line of the raise
    text: str  # the message, with … for what is filled in at run time

    @property
    def fixed(self) -> str:
        """The message's fixed words (without the filled-in parts)."""
        return self.text.replace(GAP, " ").strip()


def _text(node: ast.AST) -> str | None:
    """The message an expression makes, ``…`` for each run-time part; None if it is not text."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else GAP for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        return None if left is None and right is None else (left or GAP) + (right or GAP)
    return None


def _returned_texts(function: ast.FunctionDef) -> list[str]:
    texts = []
    for node in ast.walk(function):
        if isinstance(node, ast.Return) and node.value is not None:
            text = _text(node.value)
            if text is not None:
                texts.append(text)
    return texts


def _is_error_class(func: ast.AST) -> bool:
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return name.endswith(("Error", "TooOld"))


def _module_messages(path: Path) -> list[Message]:
    """The messages of one module: the text given to every exception it makes; the texts returned by
    its message-building functions (``_*message``, ``_*problem``, ``_damaged``, ``_foreign``: their
    results go into exceptions) and the texts passed to them; its ``*MESSAGE`` constants."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    relative = path.relative_to(ROOT).as_posix()
    builders = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                and re.search(r"(message|problem|^_damaged|^_foreign)$", n.name)}
    found = []
    for node in ast.walk(tree):
        where = f"{relative}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.FunctionDef) and node.name in builders:
            found.extend(Message(where, t) for t in _returned_texts(node))
        elif isinstance(node, ast.Call) and node.args:
            is_builder = isinstance(node.func, ast.Name) and node.func.id in builders
            if _is_error_class(node.func):
                text = _text(node.args[0])
                if text is not None:
                    found.append(Message(where, text))
            elif is_builder:
                # the parts of a message passed in (a clause, not a word or two such as "a .safetensors file")
                found.extend(Message(where, t) for t in map(_text, node.args) if t is not None and len(t.split()) >= 4)
        elif (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
              and node.targets[0].id.endswith("MESSAGE")):
            text = _text(node.value)
            if text is not None:
                found.append(Message(where, text))
    return [m for m in found if _words(m.fixed)]


def _words(text: str) -> bool:
    """Whether a message has fixed words of its own (not just a prefix on another error)."""
    return len(re.sub(r"[^A-Za-z]", "", text)) >= 8 and not text.startswith("internal:")


def messages() -> list[Message]:
    """Every message the pack's nodes and model code can raise (see the module docstring)."""
    found = []
    for source in SOURCES:
        for path in sorted((ROOT / source).rglob("*.py")):
            if any(path.relative_to(ROOT).as_posix().startswith(s) for s in SKIPPED):
                continue
            found.extend(_module_messages(path))
    unique = {}
    for message in found:
        unique.setdefault((message.where, message.text), message)
    return list(unique.values())


def table_phrases(readme: str) -> list[tuple[str, list[str]]]:
    """(row text, the phrases it quotes in its first cell) for each row of the README's
    troubleshooting table(s), the part under the ``## Troubleshooting`` heading."""
    start = readme.find(TABLE_HEADING)
    if start < 0:
        return []
    section = readme[start + len(TABLE_HEADING):]
    end = re.search(r"^## ", section, re.M)
    section = section[:end.start()] if end else section
    rows = []
    for line in section.splitlines():
        if not line.startswith("|") or set(line) <= set("|- :"):
            continue
        first = line.split("|")[1]
        phrases = re.findall(r"`([^`]+)`", first)
        if phrases:
            rows.append((line, phrases))
    return rows


def _pattern(phrase: str) -> re.Pattern:
    """A README phrase as a pattern: its ``…`` stands for any text (the filled-in parts)."""
    return re.compile(".*?".join(re.escape(part) for part in phrase.split(GAP)), re.S)


def uncovered(all_messages: list[Message], rows: list[tuple[str, list[str]]]) -> list[Message]:
    """Messages that no phrase of the table matches."""
    patterns = [_pattern(p) for _row, phrases in rows for p in phrases]
    return [m for m in all_messages if not any(p.search(m.text) for p in patterns)]


def stale(all_messages: list[Message], rows: list[tuple[str, list[str]]]) -> list[str]:
    """Phrases of the table that match no message (the message changed or went away), or that
    are too short to say which messages they mean."""
    found = []
    for _row, phrases in rows:
        for phrase in phrases:
            if len(phrase.replace(GAP, "").strip()) < MIN_PHRASE:
                found.append(f"{phrase!r}: too short (at least {MIN_PHRASE} characters)")
            elif not any(_pattern(phrase).search(m.text) for m in all_messages):
                found.append(f"{phrase!r}: no message of the pack contains it")
    return found


def main() -> None:
    all_messages = messages()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = table_phrases(readme)
    if "--list" in sys.argv:
        for m in all_messages:
            print(f"{m.where}: {m.text}")
    print(f"{len(all_messages)} messages, {len(rows)} table rows")
    for m in uncovered(all_messages, rows):
        print(f"not in the table: {m.where}: {m.text}")
    for problem in stale(all_messages, rows):
        print(f"stale: {problem}")


if __name__ == "__main__":
    main()
