"""Runs the hostile and faulty-input catalogue (tests/catalogue): one test per case."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from bench.cli import main
from tests.catalogue import Case, all_cases

CASES = all_cases()


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    for rel, content in case.files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    if case.setup is not None:
        case.setup(tmp_path)
    if case.no_cuda:
        import torch

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    try:
        code = main(list(case.argv))
    except SystemExit as exc:  # argparse exits itself on bad flags
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    assert code == case.code, f"exit {code}, expected {case.code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err, err
    if case.code != 0:
        lines = [line for line in err.splitlines() if line.strip() and "\r" not in line]
        assert len(lines) == 1, f"expected one error line, got:\n{err}"
    if case.stderr:
        assert re.search(case.stderr, err, re.IGNORECASE), f"stderr {err!r} !~ {case.stderr!r}"
    if case.stdout:
        assert re.search(case.stdout, out, re.IGNORECASE), f"stdout {out!r} !~ {case.stdout!r}"
    after = _snapshot(tmp_path)
    for rel, digest in before.items():
        if rel in case.may_change:
            continue
        assert rel in after, f"{rel} was deleted"
        assert after[rel] == digest, f"{rel} was changed"
    for rel in case.absent:
        assert not (tmp_path / rel).exists(), f"{rel} should not exist"
    if case.secret:
        assert case.secret not in out and case.secret not in err, "secret shown on the terminal"
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert case.secret.encode() not in path.read_bytes(), f"secret written to {path}"
    if case.check is not None:
        case.check(tmp_path)
    assert os.getcwd() == str(tmp_path)
