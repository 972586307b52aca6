"""Tuning on validation only: an Optuna study over a cell's learning rates, dropout, warm-up and epochs, each trial a
normal run that never reads the test part, then the best settings trained on every fold.

    python -m common.tune text_classification --trials 10 --demo            # study in runs/tune/text_classification/
    python -m common.tune multimodal_total_concat --trials 40 --dataset 20 --dataset_dir /data/KEMDy20 \\
        --storage postgresql://user:pass@db-host/kemdy --study_name mm_total   # several machines, one database

Every flag after the script's name that is not the study's own is the script's (its fold: --num_fold, default 5 as
the script's). A trial is a run of that fold with --score_on valid: it trains on the fold's training part less a
held-out tenth (which chooses its epoch), and is scored on the fold's validation part, which never trains it; the
test part is read by no trial. The study minimises that validation part's loss (each epoch's is reported, and a
trial whose loss lies above the median of earlier trials at the same epoch is stopped there: Optuna's median
pruner). The study lives in a database: a SQLite file in the study folder by default (one machine; SQLite over NFS
locks badly), or any SQLAlchemy URL (--storage) that several machines share; each runs the same command. Stopping
a command (Ctrl-C) loses only its current trial; the same command continues the study until it holds --trials
finished trials (completed or pruned). Then, unless --then none, the best settings train every fold (the script's
five, or --then fold for its fold only) into <study>/best/, scored on the test part as any run.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import re
import warnings
from pathlib import Path

from common import atomic, paths
from common.errors import Interrupted, UserError, run_cli
from common.folds import NUM_FOLDS

# The search space: (kind, low, high); "log" draws on a log scale. The epochs reach the script's --epochs.
SPACE = {
    "lr": ("log", 1e-6, 1e-2),
    "head_lr": ("log", 1e-5, 1e-1),
    "dropout": ("float", 0.0, 0.5),
    "warmup_ratio": ("float", 0.0, 0.2),
    "epochs": ("int", 1, None),
}
FINISHED = ("COMPLETE", "PRUNED")
TRIALS = "trials.csv"


def trains_an_encoder(plan) -> bool:
    """Whether the cell fine-tunes an encoder (what --lr sets): not a bio cell, nor one whose encoders are frozen."""
    cell, freeze = plan.cell, plan.settings.freeze
    return (cell.uses_text and freeze not in ("text", "both")) or (
        cell.uses_speech and freeze not in ("speech", "both")
    )


def tuned_by_default(plan) -> list[str]:
    """Every parameter of SPACE that changes the cell's training: --lr only where an encoder is fine-tuned."""
    return [name for name in SPACE if name != "lr" or trains_an_encoder(plan)]


def suggest(trial, plan, params: list[str]) -> dict:
    """The trial's values of `params` (the others stay as the command gives them)."""
    values = {}
    for name in params:
        kind, low, high = SPACE[name]
        if kind == "int":
            values[name] = trial.suggest_int(name, low, high if high is not None else plan.settings.epochs)
        else:
            values[name] = trial.suggest_float(name, low, high, log=kind == "log")
    return values


def trial_plan(plan, values: dict, folder: Path):
    """A trial's run: the command's plan with the trial's values, scored on the validation part, into `folder`;
    its metrics and predictions kept, not its model (the best settings are trained again: forty trials of
    real-sized encoders would otherwise keep about 20 GB of weights)."""
    changes = dict(score_on="valid", output_dir=str(folder), overwrite=False, resume=False, seeds=None)
    return plan.but(**values, **changes, save_model=False)


def check_folder(folder: Path) -> None:
    """A study's folder holds only what a study writes (its database, trial<k>/, best/): anything else is someone
    else's, and the study is refused there in one line."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--study {folder}: a file, not a folder")
    if folder.is_dir():
        other = sorted(
            p.name for p in folder.iterdir() if not re.fullmatch(r"study\.db|trial\d+|best|trials\.csv", p.name)
        )
        if other:
            raise UserError(
                f"--study {folder}: holds {', '.join(other[:3])}, which no study writes; give a new folder or a study's"
            )


def study_of(folder: Path, storage: str | None, name: str, seed: int):
    """The study (created, or loaded to continue): minimising, a seeded sampler, the median pruner."""
    import optuna

    check_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    # A trial whose process died stops beating; after the grace period another command marks it failed.
    with warnings.catch_warnings():  # the heartbeat is marked experimental; it is what a shared study needs
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        backend = optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
    return optuna.create_study(
        storage=backend,
        study_name=name,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        load_if_exists=True,
    )


def finished(study) -> int:
    import optuna

    states = tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED)
    return len(study.get_trials(deepcopy=False, states=states))


def run_study(
    plan,
    folder: Path,
    trials: int,
    storage: str | None = None,
    name: str | None = None,
    params: list[str] | None = None,
    log=print,
):
    """Run trials until the study holds `trials` finished ones; returns the study."""
    import optuna

    from common.train import train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = params or tuned_by_default(plan)
    study = study_of(folder, storage, name or plan.cell.name, plan.settings.seed)

    def objective(trial) -> float:
        values = suggest(trial, plan, params)
        log(
            f"trial {trial.number}: "
            + ", ".join(f"--{k} {v:.3g}" if isinstance(v, float) else f"--{k} {v}" for k, v in values.items())
        )

        def report(record: dict) -> None:
            trial.report(record["test"]["loss"], record["epoch"])  # the validation part's loss ("test" of the trial)
            if trial.should_prune():
                raise optuna.TrialPruned(f"stopped after epoch {record['epoch']}")

        (result,) = train(trial_plan(plan, values, folder / f"trial{trial.number}"), on_epoch=report)
        return result["test"]["loss"]

    if not study.trials:  # the command's own values first: the study's best is never worse on validation
        given = {name: getattr(plan.settings, name) for name in params if getattr(plan.settings, name) is not None}
        study.enqueue_trial(given, skip_if_exists=True)
    left = trials - finished(study)
    if left > 0:
        callback = optuna.study.MaxTrialsCallback(
            trials, states=tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED)
        )
        try:
            study.optimize(objective, n_trials=left, callbacks=[callback])
        except Interrupted:
            raise Interrupted(
                f"interrupted ({finished(study)} of {trials} trials finished); run the same command again to continue "
                "the study"
            ) from None
    return study


def trials_csv(study) -> str:
    """Each trial: its number, state (COMPLETE, PRUNED, FAIL ...), the validation part's loss it ended with (at the
    epoch it was stopped, if pruned) and its values."""
    names = list(dict.fromkeys(k for t in study.trials for k in t.params))
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(["trial", "state", "validation_loss", "epochs_run", *names])
    for t in study.trials:
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        value = t.value if t.value is not None else last
        writer.writerow([t.number, t.state.name, value, len(t.intermediate_values), *(t.params.get(n) for n in names)])
    return f.getvalue()


def best_plan(plan, study, folder: Path, folds: str):
    """The command's plan with the study's best values, trained on every fold (or its own) into <study>/best/."""
    values = dict(study.best_params)
    fold = {"num_fold": "all"} if folds == "all" else {}
    best = plan.but(**values, **fold, output_dir=str(folder / "best"), seeds=None)
    if folds == "all":
        best = dataclasses.replace(best, folds=tuple(range(1, NUM_FOLDS + 1)))
    return best


def main(argv: list[str] | None = None) -> None:
    from common.cli import HelpFormatter, parse_script
    from common.grid import BIO_SCRIPTS, SCRIPTS

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="python -m common.tune",
        description="Tune a cell's learning rates, dropout, warm-up and epochs on the validation part (Optuna), then "
        "train the best settings on every fold; any other flag is the script's.",
        epilog=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    parser.add_argument("script", help="the cell's script, e.g. text_classification or multimodal_total_concat")
    parser.add_argument(
        "--trials", type=int, default=10, help="finished trials (completed or stopped) the study ends with"
    )
    parser.add_argument(
        "--study", help="the study's folder: its trials, the SQLite database, best/ (default: runs/tune/<script>)"
    )
    parser.add_argument(
        "--storage",
        help="a database URL several machines share (postgresql://..., mysql://...); default: "
        "a SQLite file in the study's folder",
    )
    parser.add_argument("--study_name", help="the study's name in the database (default: the script's)")
    parser.add_argument(
        "--params",
        help=f"what to tune, comma-separated (default: all of {', '.join(SPACE)}; lr only where an encoder is "
        "fine-tuned)",
    )
    parser.add_argument(
        "--then",
        choices=("all", "fold", "none"),
        default="all",
        help="train the best settings on the five folds (all), on the command's fold, or not",
    )
    own, rest = parser.parse_known_args(argv)
    script = own.script.removesuffix(".py")
    if script not in SCRIPTS + BIO_SCRIPTS and not script.startswith("multimodal_"):
        raise UserError(f"{own.script}: not a script of this project (e.g. text_classification)")
    params = own.params.split(",") if own.params else None
    unknown = [p for p in params or [] if p not in SPACE]
    if unknown:
        raise UserError(f"--params {own.params}: {unknown[0]} is not tuned here; choose from {', '.join(SPACE)}")
    if own.trials < 1:
        raise UserError(f"--trials {own.trials}: must be at least 1")
    plan = parse_script(script, rest)
    settings = plan.settings
    for flag, bad in (
        ("--num_fold all", settings.num_fold == "all"),
        ("--seeds", bool(settings.seeds)),
        ("--score_on", settings.score_on != "test"),
        ("--output_dir", bool(settings.output_dir)),
        ("--resume", settings.resume),
        ("--test_dataset", bool(settings.test_dataset)),
    ):
        if bad:
            raise UserError(f"{flag}: the study decides where and how its trials run; give it without {flag}")
    if params and "lr" in params and not trains_an_encoder(plan):
        raise UserError(
            f"--params {own.params}: --lr is the encoders' learning rate, and {plan.cell.name} fine-tunes none here; "
            "tune --head_lr instead"
        )
    paths.check("--study", own.study)
    folder = Path(own.study or Path("runs", *(["demo"] if settings.demo else []), "tune", plan.cell.name))
    study = run_study(plan, folder, own.trials, own.storage, own.study_name, params)
    atomic.write_text(folder / TRIALS, trials_csv(study))
    print(f"every trial: {folder / TRIALS}")
    best = {"trial": study.best_trial.number, "validation loss": study.best_value, "params": study.best_params}
    print(f"the best of {finished(study)} trials: " + json.dumps(best))
    if own.then != "none":
        from common.train import train

        train(best_plan(plan, study, folder, own.then))


if __name__ == "__main__":
    run_cli(main, whole_process=True)
