"""`make e2e`'s verdicts (cli/e2e.py): an upload passes only with the outcome it was expected to get."""

from __future__ import annotations

from cli.e2e import Case, Seen, report


def test_an_outcome_passes_only_as_expected() -> None:
    photo, notes = Case("dog.jpg", b"", "CLASSIFIED"), Case("notes.jpg", b"", "REJECTED", "NotAnImage")
    assert Seen(photo, {"status": "CLASSIFIED", "mode": "serverless"}).ok
    assert not Seen(photo, {"status": "FAILED", "error_code": "RetriesExhausted"}).ok
    assert not Seen(photo, None).ok  # no outcome by the deadline
    assert Seen(notes, {"status": "REJECTED", "error_code": "NotAnImage"}).ok
    assert not Seen(notes, {"status": "REJECTED", "error_code": "CorruptImage"}).ok  # the wrong reason
    assert Seen(Case("truncated.jpg", b"", "REJECTED"), {"status": "REJECTED", "error_code": "InvalidImage"}).ok


def test_the_report_marks_each_upload_and_counts_them() -> None:
    seen = [
        Seen(Case("café/püppy + friends.png", b"", "CLASSIFIED"), {"status": "CLASSIFIED", "mode": "batch"}),
        Seen(Case("empty.jpg", b"", "REJECTED", "EmptyObject"), None),
    ]
    lines = report(seen).splitlines()
    assert lines[1].startswith("ok  café/püppy + friends.png") and lines[1].endswith("batch")
    assert lines[2].startswith("NO  empty.jpg") and "REJECTED EmptyObject" in lines[2] and "no outcome" in lines[2]
    assert lines[-1] == "1 of 2 as expected"
