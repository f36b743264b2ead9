"""The ``descentlab demo`` command trains every listed optimizer and prints a table."""

from descentlab.cli import main
from descentlab.commands.demo import DEFAULT_SETTINGS, run_demo


def test_demo_rows_cover_every_setting_and_learn():
    rows = run_demo(epochs=1, batch_size=128)
    assert [r["optimizer"] for r in rows] == list(DEFAULT_SETTINGS)
    # ten classes: chance is 10% accuracy and a loss of ln 10 ≈ 2.30
    assert sum(r["val_accuracy"] > 0.3 for r in rows) >= 5
    assert all(r["train_loss"] < 2.3 for r in rows)


def test_demo_command_prints_the_table(capsys):
    assert main(["demo", "--epochs", "1", "--batch-size", "256"]) == 0
    out = capsys.readouterr().out
    assert "val accuracy" in out and "adam" in out
