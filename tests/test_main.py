"""``python -m shrinklib``: the prepare command reports each cached model, and bad usage is refused."""
from shrinklib import __main__ as cli
from shrinklib import zoo


def test_prepare_reports_each_prepared_teacher_and_the_decoder(monkeypatch, capsys):
    folders = []
    monkeypatch.setattr(zoo, "teacher_folder", lambda task, recipe: folders.append(recipe))
    monkeypatch.setattr(zoo, "teacher_training", lambda task, recipe: {
        "test_accuracy": 0.85, "validation_accuracy": 0.8, "steps": 963, "train_seconds": 500.0, "threads": 2})
    monkeypatch.setattr(zoo, "decoder", lambda: None)
    assert cli.main(["prepare"]) == 0
    out = capsys.readouterr().out
    assert folders == list(zoo.PREPARED_TEACHERS)
    assert "teacher 'rt', seed 0: test accuracy 0.8500" in out and "teacher 'rt', seed 1:" in out
    assert "decoder: ready" in out


def test_unknown_command_prints_usage(capsys):
    assert cli.main(["train"]) == 2
    assert "usage: python -m shrinklib {prepare,install-assets}" in capsys.readouterr().err
