"""`python -m fastloop.demo`: the default run reaches 95% accuracy, prints the table and saves valid PNGs."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

from fastloop import demo  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_demo(argv: list[str]) -> tuple[dict, str]:
    "Run `demo.main(argv)`; return its result and everything it printed."
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        result = demo.main(argv)
    return result, buf.getvalue()


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> tuple[dict, str, Path]:
    "The demo with its default settings (about 2-4 s on 2 CPU cores), plots in a temporary folder."
    out = tmp_path_factory.mktemp("demo") / "plots"
    result, printed = run_demo(["--out", str(out)])
    return result, printed, out


def test_default_settings_reach_95_percent(default_run):
    result, printed, out = default_run
    assert result["accuracy"] >= 0.95
    assert result["out_dir"] == out.resolve()
    assert result["elapsed"] >= result["train_seconds"] > 0
    assert f"{result['accuracy']:.1%}" in printed
    assert str(out.resolve()) in printed


def test_plots_are_pngs(default_run):
    result, _, out = default_run
    assert set(result["plots"]) == {"losses", "lr", "metrics"}
    for name in ("losses.png", "lr.png", "metrics.png"):
        path = out / name
        assert path.is_file(), name
        assert path.read_bytes()[:8] == PNG_MAGIC, name
        assert path.stat().st_size > 5000, name  # a drawn figure, not an empty canvas
    assert sorted(p.name for p in result["plots"].values()) == ["losses.png", "lr.png", "metrics.png"]


def test_prints_the_recorder_table(default_run):
    _, printed, _ = default_run
    lines = [line.split("\r")[-1].strip() for line in printed.splitlines()]  # drop progress-bar redraws
    header = next(line for line in lines if line.startswith("epoch"))
    assert header.split() == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    rows = [line.split() for line in lines[lines.index(header) + 1:] if line[:1].isdigit()]
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "4"]
    assert all(len(r) == 5 for r in rows)


def test_same_seed_same_result(tmp_path):
    a, _ = run_demo(["--epochs", "1", "--seed", "3", "--out", str(tmp_path / "a")])
    b, _ = run_demo(["--epochs", "1", "--seed", "3", "--out", str(tmp_path / "b")])
    assert a["accuracy"] == b["accuracy"]
    assert (tmp_path / "a" / "metrics.png").is_file()


def test_cli_options():
    args = demo.parse_args(["--epochs", "2", "--lr", "0.01", "--out", "x", "--seed", "7"])
    assert (args.epochs, args.lr, args.out, args.seed) == (2, 0.01, Path("x"), 7)
    defaults = demo.parse_args([])
    assert (defaults.epochs, defaults.out) == (5, Path("demo_output"))
    for bad in (["--epochs", "0"], ["--lr", "-1"]):
        with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            demo.parse_args(bad)


def test_missing_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn...` raise ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'fastloop\[demo\]'"):
        demo.load_digits_data()
