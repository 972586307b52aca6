"""common.tune: an Optuna study whose trials are runs scored on the validation part, never reading the test part,
that survives an interruption and trains its best settings on every fold."""

import json

import optuna
import pytest

from common import tune
from common.cli import parse_script
from common.data import KemdyDataset
from common.errors import Interrupted, UserError
from common.folds import fold_splits
from common.kemdy import read_corpus

from helpers import tiny_command


def test_a_study_never_reads_the_test_part_survives_an_interruption_and_trains_its_best_on_every_fold(
    corpus20, tiny_models, tmp_path, monkeypatch
):
    argv = tiny_command("text_classification", corpus20[0], tiny_models, "unused", "--num_fold", "2", epochs=2)[2:]
    argv = argv[: argv.index("--output_dir")] + argv[argv.index("--output_dir") + 2 :]
    plan = parse_script("text_classification", argv)
    sessions = [u.session for u in read_corpus("20", corpus20[0]).utterances]
    fold, train_part, valid_part = fold_splits(sessions, 2, "contiguous", 0.1)
    seen = []
    made = KemdyDataset.__init__

    def recorded(self, utterances, indices, *rest, **kw):
        seen.append(list(indices))
        made(self, utterances, indices, *rest, **kw)

    monkeypatch.setattr(KemdyDataset, "__init__", recorded)
    folder = tmp_path / "study"
    from common import train as loop

    fit = loop.fit

    def interrupted_in_trial_2(run):
        if run.run_dir.name == "trial2":
            raise KeyboardInterrupt
        return fit(run)

    monkeypatch.setattr(loop, "fit", interrupted_in_trial_2)
    with pytest.raises(Interrupted, match=r"^interrupted \(2 of 10 trials finished\); run the same command again"):
        tune.run_study(plan, folder, trials=10, log=lambda _: None)
    monkeypatch.setattr(loop, "fit", fit)
    study = tune.run_study(plan, folder, trials=10, log=lambda _: None)
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and tune.finished(study) == 10
    assert all(not set(indices) & set(fold.test) for indices in seen)  # no trial's dataset holds a test utterance
    assert any(set(indices) == set(valid_part) for indices in seen)  # each trial is scored on the validation part
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        metrics = json.loads((folder / f"trial{trial.number}" / "metrics.json").read_text())
        assert metrics["split"] == "contiguous, scored on validation" and metrics["test"]["n"] == len(valid_part)
        assert metrics["test"]["loss"] == pytest.approx(trial.value)
        config = json.loads((folder / f"trial{trial.number}" / "config.json").read_text())
        assert config["args"]["lr"] == pytest.approx(trial.params["lr"]) and config["args"]["score_on"] == "valid"
    again = optuna.load_study(study_name="text_classification", storage=f"sqlite:///{folder / 'study.db'}")
    assert len(again.trials) == len(study.trials)  # the study is in its database

    from common.train import train

    results = train(tune.best_plan(plan, study, folder, "all"))
    assert [r["fold"] for r in results] == [1, 2, 3, 4, 5]
    config = json.loads((folder / "best" / "fold3" / "config.json").read_text())
    assert config["args"]["lr"] == pytest.approx(study.best_params["lr"]) and config["args"]["score_on"] == "test"
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"--study .*study: holds notes.txt, which no study writes"):
        tune.run_study(plan, folder, trials=11, log=lambda _: None)


def test_the_command_refuses_what_the_study_decides_in_one_line(corpus20):
    base = ["text_classification", "--dataset", "20", "--dataset_dir", str(corpus20[0])]
    with pytest.raises(UserError, match=r"^--num_fold all: the study decides where and how its trials run"):
        tune.main([*base, "--num_fold", "all"])
    with pytest.raises(UserError, match=r"^--params lr,momentum: momentum is not tuned here"):
        tune.main([*base, "--params", "lr,momentum"])
    with pytest.raises(UserError, match=r"^speech_thing: not a script of this project"):
        tune.main(["speech_thing"])


def test_the_encoders_learning_rate_is_tuned_only_where_an_encoder_is_fine_tuned(corpus20):
    from common.cli import parse_script

    base = ["--dataset", "20", "--dataset_dir", str(corpus20[0])]
    assert tune.tuned_by_default(parse_script("text_classification", base)) == list(tune.SPACE)
    everything_but_lr = [name for name in tune.SPACE if name != "lr"]
    assert tune.tuned_by_default(parse_script("bio_total", base)) == everything_but_lr
    assert tune.tuned_by_default(parse_script("multimodal_total_concat", [*base, "--freeze", "both"])) == (
        everything_but_lr
    )
    assert tune.tuned_by_default(parse_script("multimodal_total_concat", [*base, "--freeze", "text"])) == list(
        tune.SPACE
    )
    with pytest.raises(UserError, match=r"^--params lr,dropout: --lr is the encoders' learning rate, and bio_total"):
        tune.main(["bio_total", *base, "--params", "lr,dropout"])
