"""A user's mistake on the ``grukit`` command line is one line on stderr and exit status 2, never a traceback;
``--help`` shows every default; a bug still shows its traceback."""

import argparse
import json
import subprocess
import sys

import pytest

from grukit.cli import build_parser, main


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("grukit: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["forecast", "--dataset", "airline", "--horizon", "3", "--season", "-3"], "--season"),
        (["forecast", "--dataset", "airline", "--horizon", "0"], "--horizon"),
        (["forecast", "--dataset", "airline", "--horizon", "2", "--epochs", "-5"], "--epochs"),
        (["forecast", "--dataset", "airline", "--horizon", "two"], "--horizon"),
        (["lm", "train", "--text", "a.txt", "--config", "c.json", "--out", "o", "--steps", "0"], "--steps"),
        (["lm", "train", "--text", "a.txt", "--config", "c.json", "--out", "o", "--valid-fraction", "1"],
         "--valid-fraction"),
        (["lm", "generate", "m", "--prompt", "a", "--top-p", "0"], "--top-p"),
        (["lm", "generate", "m", "--prompt", "a", "--temperature", "-1"], "--temperature"),
        (["finetune", "classify", "--lm", "m", "--data", "d.csv", "--out", "o", "--batch-size", "-4"], "--batch-size"),
        (["finetune", "lm", "--lm", "m", "--text", "a.txt", "--out", "o", "--lr", "nan"], "--lr"),
        (["classify-text", "--csv", "x.csv", "--test-size", "1.5"], "--test-size"),
        (["classify-series", "--csv", "x.csv", "--min-steps", "-1"], "--min-steps"),
        (["translate", "--pairs", "p.tsv", "--beam-size", "0"], "--beam-size"),
        (["tag", "--seed", "-1"], "--seed"),
    ],
)
def test_absurd_values_are_refused_naming_the_flag(argv, flag, capsys):
    code, _, err = run(argv, capsys)
    line = one_error_line(err)
    assert code == 2 and f"argument {flag}:" in line and "expected" in line


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"  \n\n", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "holds a NUL byte on line 3: it is binary"),
        ("day,close\n1,2\n2,café\n".encode("latin-1"), "is not UTF-8: byte 0xe9 on line 3"),
        ("day,close\n1,2\n".encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
        (b"day,close\n1,2\n2,abc\n", "line 3, column 'close': 'abc' is not a number"),
        (b"day,close\n1,2\n2,inf\n", "line 3, column 'close': 'inf' is not a finite number"),
        (b"close\n1\n2\n\n4\n5\n", "line 4 is blank"),
        (b"day,close\n1,2,3\n", "line 2 has 3 cells; its header has 2"),
        (b"day,close\n", "has a header but no rows"),
    ],
)
def test_unreadable_csv_files_get_one_line_naming_file_line_and_column(tmp_path, content, message, capsys):
    path = tmp_path / "prices.csv"
    path.write_bytes(content)
    code, _, err = run(["forecast", "--csv", str(path), "--column", "close", "--horizon", "2"], capsys)
    line = one_error_line(err)
    assert code == 2 and str(path) in line and message in line


def test_trailing_blank_lines_and_a_byte_order_mark_are_read(tmp_path):
    from grukit.datasets import read_series_column

    path = tmp_path / "prices.csv"
    path.write_bytes("\ufeffclose\n1\nNaN\n3\n\n\n".encode())
    values = read_series_column(path, "close")
    assert values[0] == 1 and values[2] == 3 and values.shape == (3,) and values[1] != values[1]


def test_missing_files_and_folders_are_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere.csv"
    code, _, err = run(["classify-text", "--csv", str(missing)], capsys)
    assert code == 2 and f"no such file: {missing}" in one_error_line(err)
    code, _, err = run(["tag", "--file", str(tmp_path)], capsys)
    assert code == 2 and f"{tmp_path} is a folder" in one_error_line(err)
    code, _, err = run(["lm", "generate", str(missing), "--prompt", "a"], capsys)
    assert code == 2 and one_error_line(err)


def test_text_inputs_of_every_command_are_checked(tmp_path, capsys):
    latin = tmp_path / "corpus.txt"
    latin.write_bytes("the/D café/N\n".encode("latin-1"))
    code, _, err = run(["tag", "--file", str(latin)], capsys)
    assert code == 2 and f"{latin} is not UTF-8: byte 0xe9 on line 1" in one_error_line(err)
    wide = tmp_path / "pairs.tsv"
    wide.write_bytes("one\tun\n".encode("utf-16"))
    code, _, err = run(["translate", "--pairs", str(wide)], capsys)
    assert code == 2 and f"{wide} is UTF-16" in one_error_line(err)
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("text,label\ngood film,pos\n,neg\nbad film,neg\n")
    code, _, err = run(["classify-text", "--csv", str(reviews)], capsys)
    assert code == 2 and f"{reviews} line 3, column 'text': the cell is empty" in one_error_line(err)
    config = tmp_path / "config.json"
    config.write_text("{not json")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run(["lm", "train", "--text", str(empty), "--config", str(config), "--out", str(tmp_path / "o")],
                       capsys)
    assert code == 2 and f"config {config} is not valid JSON" in one_error_line(err)
    config.write_text(json.dumps({"tokenizer": {"type": "char"}, "model": {}, "training": {}}))
    code, _, err = run(["lm", "train", "--text", str(empty), "--config", str(config), "--out", str(tmp_path / "o")],
                       capsys)
    assert code == 2 and f"{empty} is empty" in one_error_line(err)
    config.write_text(json.dumps({"tokenizer": {}, "model": {}, "training": {"batch_sise": 4}}))
    code, _, err = run(["lm", "train", "--text", str(empty), "--config", str(config), "--out", str(tmp_path / "o")],
                       capsys)
    assert code == 2 and "unknown keys ['batch_sise']" in one_error_line(err)
    one_label = tmp_path / "one.csv"
    one_label.write_text("text,label\n" + "".join(f"text {i},pos\n" for i in range(6)))
    code, _, err = run(["finetune", "classify", "--lm", str(tmp_path), "--data", str(one_label), "--out",
                        str(tmp_path / "clf")], capsys)
    assert code == 2 and "has one label, 'pos'; a classifier needs at least two" in one_error_line(err)


def test_help_of_every_command_shows_every_default(capsys):
    def commands(parser: argparse.ArgumentParser, path: list[str]):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, [*path, name])

    seen = 0
    for path, parser in commands(build_parser(), []):
        code, out, _ = run([*path, "--help"], capsys)
        assert code == 0 and out.startswith("usage: grukit")
        text = " ".join(out.split())
        assert "default: None" not in text
        for action in parser._actions:
            if action.option_strings and action.nargs != 0 and not action.required and action.default is not None:
                assert f"(default: {action.default})" in text, (path, action.dest)
                seen += 1
    assert seen >= 25


def test_a_users_error_is_one_line_but_a_bug_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    import grukit.cli.tasks as task_commands

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("one\tun\ntwo\tdeux\n")

    def bug(args):
        return {}["missing key"]

    monkeypatch.setattr(task_commands, "translate", bug)
    with pytest.raises(KeyError):
        main(["translate", "--pairs", str(pairs)])

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(task_commands, "translate", interrupted)
    code, _, err = run(["translate", "--pairs", str(pairs)], capsys)
    assert code == 130 and err.strip() == "grukit: interrupted"

    def refused(args):
        raise ValueError("Translator expected at least 2 pairs,\ngot 1")

    monkeypatch.setattr(task_commands, "translate", refused)
    code, _, err = run(["translate", "--pairs", str(pairs)], capsys)
    assert code == 2 and err == "grukit: error: Translator expected at least 2 pairs, got 1\n"
    monkeypatch.setenv("GRUKIT_TRACEBACK", "1")
    with pytest.raises(ValueError, match="at least 2 pairs"):
        main(["translate", "--pairs", str(pairs)])


def test_the_installed_command_exits_2_with_one_line(tmp_path):
    missing = tmp_path / "prices.csv"
    done = subprocess.run(
        [sys.executable, "-m", "grukit.cli", "forecast", "--csv", str(missing), "--column", "close", "--horizon", "2"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"grukit: error: no such file: {missing}\n"
