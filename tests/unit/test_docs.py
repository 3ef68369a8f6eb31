"""The README and docs/ stay true (tools/check_docs.py): their links, anchors, make targets and parameter defaults."""

from __future__ import annotations

from pathlib import Path

from tools.check_docs import anchors, check, documents, slug


def test_every_link_anchor_and_make_target_of_the_docs_resolves() -> None:
    names = {path.name for path in documents()}
    assert {"README.md", "architecture.md", "operations.md", "performance.md", "CONTRIBUTING.md"} <= names
    assert [str(problem) for problem in check()] == []


def test_headings_become_githubs_anchors() -> None:
    assert slug("The flood path") == "the-flood-path"
    assert slug("`sam local invoke` against the local stack") == "sam-local-invoke-against-the-local-stack"
    assert slug("Workers, threads & TorchServe (2 vCPUs)") == "workers-threads--torchserve-2-vcpus"


def test_broken_links_anchors_and_make_targets_are_found(tmp_path: Path) -> None:
    (tmp_path / "Makefile").write_text("demo: install\n\t@echo demo\nVAR := 1\ntest:\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Setup\n\n## Setup\n\n```\n## not a heading\n```\n")
    (tmp_path / "README.md").write_text(
        "# Project\n\n"
        "[guide](docs/guide.md), [setup](docs/guide.md#setup), [again](docs/guide.md#setup-1), [up](#project)\n"
        "[gone](docs/missing.md) and [no heading](docs/guide.md#install) and [web](https://example.com/x#y)\n"
        "[inside code](docs/guide.md#not-a-heading) is a link; `[this](nowhere.md)` is code\n"
        "Run `make demo`, `make test ARGS=1`, and `make deploy`.\n\n"
        "```bash\nmake VAR=2 demo && make shipit   # make nothing\n```\n"
    )
    problems = [f"{p.line}: {p.message}" for p in check(tmp_path)]
    assert problems == [
        "4: link to docs/missing.md: docs/missing.md does not exist",
        "4: link to docs/guide.md#install: guide.md has no heading #install",
        "5: link to docs/guide.md#not-a-heading: guide.md has no heading #not-a-heading",
        "6: `make deploy`: the Makefile has no such target",
        "9: make shipit: the Makefile has no such target",
    ]
    assert anchors(tmp_path / "docs" / "guide.md") == {"guide", "setup", "setup-1"}


def test_a_parameter_table_must_give_the_templates_defaults(tmp_path: Path) -> None:
    (tmp_path / "Makefile").write_text("test:\n")
    (tmp_path / "template.yaml").write_text(
        "Parameters:\n  Mode:\n    Type: String\n    Default: auto\n  Size:\n    Type: Number\n    Default: 5000\n"
        '  Email:\n    Type: String\n    Default: ""\nResources:\n  Default:\n    Type: X\n'
    )
    (tmp_path / "README.md").write_text(
        "| parameter | default | meaning |\n| --- | --- | --- |\n"
        "| `Mode` / `Email` | `auto` / empty | fine |\n| `Size` | 20,000 | stale |\n| `Colour` | red | unknown |\n\n"
        "| name | default |\n| --- | --- |\n| `Size` | 1 | not a parameter table |\n"
    )
    problems = [f"{p.line}: {p.message}" for p in check(tmp_path)]
    assert problems == [
        "4: parameter Size: the default is '5000', not '20,000'",
        "5: parameter Colour: template.yaml has no such parameter",
    ]


def test_prose_that_gives_a_parameters_value_must_give_its_default(tmp_path: Path) -> None:
    (tmp_path / "Makefile").write_text("test:\n")
    (tmp_path / "template.yaml").write_text(
        "Parameters:\n  MaxImagesPerJob:\n    Type: Number\n    Default: 20000\n"
        "  MaxBatchWaitMinutes:\n    Type: Number\n    Default: 360\nResources: {}\n"
    )
    (tmp_path / "README.md").write_text(
        "Jobs of at most `MaxImagesPerJob` images (5,000), records each.\n"  # stale
        "`MaxImagesPerJob` (20,000) and MaxImagesPerJob (20000; see below) are right.\n"
        "With MaxImagesPerJob at its default 5,000 jobs start twice as often.\n"  # stale
        "`MaxBatchWaitMinutes` (6 hours) is in other units; `MaxImagesPerJob` (see the cost model) is a remark.\n"
        "```\nMaxImagesPerJob (1)   # code is not prose\n```\n"
    )
    problems = [f"{p.line}: {p.message}" for p in check(tmp_path)]
    assert problems == [
        "1: MaxImagesPerJob (5,000): the default is '20000'",
        "3: MaxImagesPerJob (5,000): the default is '20000'",
    ]
