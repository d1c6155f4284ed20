"""Reading the Dockerfile's instructions, so that tests can do what the image build does.

Only what kongtask's Dockerfile uses: stages (``FROM ... AS name``), ``ENV``, ``WORKDIR``, ``COPY``,
``RUN``, ``USER``, ``ENTRYPOINT`` and ``CMD``, with ``\\`` continuations and ``#`` comments.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str  # upper case: RUN, ENV, ...
    text: str  # the rest of the line, continuations joined


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.text for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """The stage's ENV, in order, with ``$NAME`` and ``${NAME}`` of earlier values expanded."""
        values: dict[str, str] = {}
        for text in self.all("ENV"):
            for pair in shlex.split(text):
                name, _, value = pair.partition("=")
                values[name] = _expand(value, values)
        return values

    def exec_form(self, keyword: str) -> list[str]:
        """An ENTRYPOINT or CMD, which must be in exec (JSON) form so that signals reach the process."""
        text = self.last(keyword)
        assert text is not None, f"the {self.name} stage has no {keyword}"
        argv = json.loads(text)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), f"{keyword} is not a JSON list"
        return argv


def _expand(value: str, known: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: known.get(m[1] or m[2], m[0]), value)


def instructions(path: Path) -> list[Instruction]:
    lines: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, rest = whole.partition(" ")
        lines.append(Instruction(keyword.upper(), rest.strip()))
    assert not pending, f"{path} ends inside a continued instruction"
    return lines


def stages(path: Path) -> dict[str, Stage]:
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for instruction in instructions(path):
        if instruction.keyword == "FROM":
            words = instruction.text.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(found))
            current = found[name] = Stage(name, words[0])
        elif current is not None:
            current.instructions.append(instruction)
    return found
