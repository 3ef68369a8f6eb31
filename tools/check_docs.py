"""Docs that stay true: every relative link of the README and docs/ leads to a file that exists, and to
a heading of it where it names one, every `make` target they name is one the Makefile has, and every
table of template parameters gives each parameter's default as template.yaml has it, and so does prose
that gives a parameter's value as `Name (value)` or "Name ... default value".

    python -m tools.check_docs        (from the repository root; also a test: tests/unit/test_docs.py)

Anchors are made from headings as GitHub makes them: lowercased, punctuation other than hyphens and
underscores dropped, spaces turned into hyphens, a repeated heading numbered (-1, -2, ...). Links to
web pages are not followed (no network here), and nothing inside code is read as a link.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
MAKE_RULE = re.compile(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", re.MULTILINE)
COMMAND_SEPARATOR = re.compile(r"&&|\|\||;|\|")


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int
    message: str

    def __str__(self) -> str:
        where = self.file.relative_to(REPO) if self.file.is_relative_to(REPO) else self.file
        return f"{where}:{self.line}: {self.message}"


def documents(root: Path = REPO) -> list[Path]:
    """The README, the other top-level Markdown files and everything under docs/."""
    return sorted([*root.glob("*.md"), *(root / "docs").rglob("*.md")])


def slug(heading: str) -> str:
    text = CODE_SPAN.sub(lambda m: m.group(2), heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def split_code(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(prose lines, code lines), each with its line number; fenced blocks are code."""
    prose, code = [], []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif fenced:
            code.append((number, line))
        else:
            prose.append((number, line))
    return prose, code


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    prose, _ = split_code(path.read_text())
    for _, line in prose:
        if match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def make_targets(makefile: Path) -> set[str]:
    return set(MAKE_RULE.findall(makefile.read_text()))


def named_targets(command: str) -> list[str]:
    """The targets of each `make ...` in a shell command line."""
    found = []
    for part in COMMAND_SEPARATOR.split(command):
        words = part.strip().removeprefix("$ ").split()
        if words[:1] != ["make"]:
            continue
        found += [w for w in words[1:] if "=" not in w and not w.startswith(("-", '"', "'", "#"))][:1]
    return found


def table_cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def check_defaults(path: Path, prose: list[tuple[int, str]], defaults: dict[str, str]) -> list[Problem]:
    """Rows of a table headed `| parameter | default | ...`: `Name` (or `A` / `B`) and its default(s)."""
    problems = []
    in_table = False
    for number, line in prose:
        if not line.startswith("|"):
            in_table = False
            continue
        cells = table_cells(line)
        if cells[:2] == ["parameter", "default"]:
            in_table = True
            continue
        if not in_table or set(cells[0]) <= {"-", " "}:
            continue
        names = [name.strip().strip("`") for name in cells[0].split(" / ")]
        values = [value.strip().strip("`") for value in cells[1].split(" / ")]
        for name, value in zip(names, values, strict=False):
            if name not in defaults:
                problems.append(Problem(path, number, f"parameter {name}: template.yaml has no such parameter"))
            elif value.replace(",", "") != ("empty" if defaults[name] == "" else defaults[name]):
                problems.append(
                    Problem(path, number, f"parameter {name}: the default is {defaults[name]!r}, not {value!r}")
                )
    return problems


NUMBER = r"(\d[\d,]*(?:\.\d+)?)"


def claims(line: str, name: str) -> list[str]:
    """The values a line of prose gives a parameter: `MaxImagesPerJob (20,000)`, "MaxImagesPerJob images
    (20,000)", "MaxImagesPerJob, the
    default 20,000". Only a bare number counts, so a value in other units ("(6 hours)") or a remark in
    brackets is not read as one."""
    text = CODE_SPAN.sub(lambda m: m.group(2), line)
    found = re.findall(rf"\b{name}\b(?:\s+[a-z]+)?\s*\(\s*(?:default:?\s+)?{NUMBER}(?=[),;])", text)
    found += re.findall(rf"\b{name}\b[^.;:()|]{{0,40}}?\bdefault(?:s| is| of)?:?\s+{NUMBER}", text)
    return [value.rstrip(",") for value in found]


def check_claims(path: Path, prose: list[tuple[int, str]], defaults: dict[str, str]) -> list[Problem]:
    problems = []
    for number, line in prose:
        for name, default in defaults.items():
            if name not in line:
                continue
            problems += [
                Problem(path, number, f"{name} ({value}): the default is {default!r}")
                for value in claims(line, name)
                if value.replace(",", "") != default
            ]
    return problems


def template_defaults(root: Path) -> dict[str, str]:
    """Each parameter's Default in the tree's template.yaml, as text ("" where it has none)."""
    from infra.template import load_template, parameter_defaults

    defaults = parameter_defaults(load_template(root / "template.yaml"))
    return {name: "" if value is None else str(value) for name, value in defaults.items()}


def check_file(path: Path, targets: set[str], defaults: dict[str, str] | None = None) -> list[Problem]:
    problems = []
    prose, code = split_code(path.read_text())
    if defaults is not None:
        problems += check_defaults(path, prose, defaults) + check_claims(path, prose, defaults)
    for number, line in prose:
        spans = [m.group(2) for m in CODE_SPAN.finditer(line)]
        for span in spans:
            problems += [Problem(path, number, f"`make {t}`: the Makefile has no such target")
                         for t in named_targets(span) if t not in targets]  # fmt: skip
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            if problem := check_link(path, match.group(1)):
                problems.append(Problem(path, number, problem))
    for number, line in code:
        command = line.split(" #", 1)[0]
        problems += [Problem(path, number, f"make {t}: the Makefile has no such target")
                     for t in named_targets(command) if t not in targets]  # fmt: skip
    return problems


def check_link(source: Path, target: str) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
        return None
    file_part, _, anchor = target.partition("#")
    destination = (source.parent / file_part).resolve() if file_part else source
    if not destination.exists():
        return f"link to {target}: {file_part} does not exist"
    if anchor:
        if destination.suffix != ".md" or destination.is_dir():
            return f"link to {target}: only a Markdown file has headings to link to"
        if anchor not in anchors(destination):
            return f"link to {target}: {destination.name} has no heading #{anchor}"
    return None


def check(root: Path = REPO) -> list[Problem]:
    targets = make_targets(root / "Makefile")
    defaults = template_defaults(root) if (root / "template.yaml").exists() else None
    return [problem for path in documents(root) for problem in check_file(path, targets, defaults)]


def main() -> int:
    problems = check()
    for problem in problems:
        print(problem)
    print(f"{len(documents())} documents checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
