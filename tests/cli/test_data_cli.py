"""``tuneops data ...`` as a user runs it: exit codes, every problem by line, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tuneops.cli.main import main

GOOD = {
    "messages": [
        {"role": "system", "content": "You triage claims."},
        {"role": "user", "content": "Claim {i}: hail damage, $900."},
        {"role": "assistant", "content": "Decision: APPROVE\nReason: covered {i}.\nNext step: pay."},
    ]
}


def good(i: int) -> str:
    return json.dumps(GOOD).replace("{i}", str(i))


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path, *args: str):
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["tuneops", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    return exited.value.code or 0, out, err


CASES = {
    "truncated": ('{"messages": [{"role": "user", "content": "x"}', 1, "invalid_json"),
    "wrong_role": (
        '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
        1,
        "invalid_role",
    ),
    "no_assistant": ('{"messages": [{"role": "user", "content": "x"}]}', 1, "missing_assistant"),
    "non_string": (
        '{"messages": [{"role": "user", "content": {"a": 1}}, {"role": "assistant", "content": "y"}]}',
        1,
        "invalid_content",
    ),
    "over_long": (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "claim " * 70000},
                    {"role": "assistant", "content": "y"},
                ]
            }
        ),
        1,
        "too_many_tokens",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_line_named_with_line_number(tmp_path: Path, monkeypatch, capsys, case: str):
    bad, code, problem = CASES[case]
    path = write(tmp_path / "d.jsonl", [good(i) for i in range(6)] + [bad] + [good(i) for i in range(6, 60)])
    rc, out, err = run(monkeypatch, capsys, tmp_path, "data", "validate", str(path))
    assert rc == code
    assert problem in out and "line 7" in out
    assert "Traceback" not in out + err
    rc, out, _ = run(monkeypatch, capsys, tmp_path, "data", "validate", str(path), "--json")
    report = json.loads(out)
    assert rc == code and report["valid"] is False
    assert {"line": 7, "code": problem} in [
        {"line": p["line"], "code": p["code"]} for p in report["problems"]
    ]


def test_valid_file_exits_zero_and_reports_tokens(tmp_path: Path, monkeypatch, capsys):
    path = write(tmp_path / "d.jsonl", [good(i) for i in range(60)])
    rc, out, _ = run(monkeypatch, capsys, tmp_path, "data", "validate", str(path))
    assert rc == 0 and "valid" in out and "cl100k_base" in out and "training tokens" in out


@pytest.mark.parametrize(
    ("content", "code", "fragment"),
    [
        (b"", 1, "empty_file"),
        (bytes(range(256)) * 40, 1, "binary_file"),
        ("\n".join(good(i) for i in range(5)).encode(), 1, "too_few_examples"),
    ],
)
def test_file_level_problems(tmp_path: Path, monkeypatch, capsys, content: bytes, code: int, fragment: str):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    rc, out, _ = run(monkeypatch, capsys, tmp_path, "data", "validate", str(path))
    assert rc == code and fragment in out


def test_missing_file_is_usage_error(tmp_path: Path, monkeypatch, capsys):
    rc, out, err = run(monkeypatch, capsys, tmp_path, "data", "validate", "nope.jsonl")  # noqa: RUF059
    assert rc == 2 and "nope.jsonl: no such file" in err and len(err.strip().splitlines()) == 1


def test_model_option_sets_the_limit(tmp_path: Path, monkeypatch, capsys):
    long_answer = json.dumps(
        {"messages": [{"role": "user", "content": "claim " * 2000}, {"role": "assistant", "content": "y"}]}
    )
    path = write(tmp_path / "d.jsonl", [good(i) for i in range(60)] + [long_answer])
    assert run(monkeypatch, capsys, tmp_path, "data", "validate", str(path), "--model", "gpt-4o-mini")[0] == 0
    assert (
        run(monkeypatch, capsys, tmp_path, "data", "validate", str(path), "--model", "tuneops-tiny")[0] == 1
    )
    assert run(monkeypatch, capsys, tmp_path, "data", "validate", str(path), "--model", "nonesuch")[0] == 2


def test_version_list_show(tmp_path: Path, monkeypatch, capsys):
    path = write(tmp_path / "train.jsonl", [good(i) for i in range(80)])
    rc, out, _ = run(
        monkeypatch, capsys, tmp_path, "data", "version", str(path), "--name", "claims", "--json"
    )
    first = json.loads(out)
    assert rc == 0 and first["created"] and first["ref"].startswith("claims@")
    rc, out, _ = run(monkeypatch, capsys, tmp_path, "data", "version", str(path), "--name", "claims")
    assert rc == 0 and "unchanged" in out and first["digest"] in out
    rc, out, _ = run(monkeypatch, capsys, tmp_path, "data", "list", "--json")
    assert [v["ref"] for v in json.loads(out)] == [first["ref"]]
    rc, out, _ = run(monkeypatch, capsys, tmp_path, "data", "show", f"claims@{first['digest'][:10]}")
    assert rc == 0 and first["ref"] in out and "train" in out
    assert (tmp_path / ".tuneops" / "data" / "datasets" / "claims").is_dir()
    rc, _, err = run(monkeypatch, capsys, tmp_path, "data", "show", "claims@0000000000")
    assert rc == 1 and "no version" in err


def test_version_of_invalid_data_fails_with_line(tmp_path: Path, monkeypatch, capsys):
    path = write(tmp_path / "train.jsonl", [good(i) for i in range(20)] + ["{broken"])
    rc, _, err = run(monkeypatch, capsys, tmp_path, "data", "version", str(path))
    assert rc == 1 and "train.jsonl:21" in err and "Traceback" not in err


@pytest.mark.slow
def test_console_script_end_to_end(tmp_path: Path):
    """The installed ``tuneops`` command: one line on stderr, exit 2, no traceback."""
    exe = Path(sys.executable).with_name("tuneops")
    result = subprocess.run(
        [str(exe), "data", "validate", str(tmp_path / "missing.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no such file" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([str(exe), "data", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "validate" in result.stdout and "version" in result.stdout
