"""Stand-ins for the commands of the documentation's `parse` blocks, which need the real corpus, a GPU or a
cluster: each checks its command line the way the real command would and does no work.

    python ARGS                 recorded (PYTHON_SHIM, a shell script: no process start per command), then
                                checked in one process by `check_recorded`:
      python X.py ARGS          the script's own argument checks (common.cli.parse_args), no folder checks
      python -m common.M ARGS   the module's argument parser
    accelerate launch ...       accelerate's launch parser, then the script as above
    sbatch [--wrap CMD | FILE]  CMD run through bash; FILE run through bash once per task of its --array
    hf download REPO [--local-dir DIR]
"""

import argparse
import os
import re
import runpy
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# `.venv/bin/python` in a shimmed tree: appends its command line to $DOCS_SHIM_RECORD (the number of words,
# then each word, every one NUL-terminated), for `check_recorded`.
PYTHON_SHIM = """#!/bin/sh
{ printf '%s\\0' "$#"; for word in "$@"; do printf '%s\\0' "$word"; done; } >> "$DOCS_SHIM_RECORD"
"""


def fail(message: str) -> None:
    print(f"docs_shim: {message}", file=sys.stderr)
    raise SystemExit(2)


def recorded(path: Path) -> list[list[str]]:
    """The command lines PYTHON_SHIM appended to `path`, in order."""
    words = Path(path).read_bytes().decode().split("\0")[:-1] if Path(path).is_file() else []
    commands = []
    while words:
        n = int(words.pop(0))
        commands.append(words[:n])
        del words[:n]
    return commands


def check_recorded(path: Path) -> None:
    """Each recorded python command line checked as the real command would check it (SystemExit 2 at the
    first that fails)."""
    for argv in recorded(path):
        python(argv)


def python(argv: list[str]) -> None:
    if argv[:1] == ["-m"]:
        parse = argparse.ArgumentParser.parse_args

        def parse_only(self, args=None, namespace=None):
            parse(self, args, namespace)
            raise SystemExit(0)

        argparse.ArgumentParser.parse_args, saved = parse_only, sys.argv
        try:
            sys.argv = [argv[1], *argv[2:]]
            with warnings.catch_warnings():  # checked in a process that imported the module already
                warnings.filterwarnings("ignore", "'(common|tools)\\.", RuntimeWarning)
                runpy.run_module(argv[1], run_name="__main__")
        except SystemExit as stop:
            if stop.code:
                fail(f"python {shlex.join(argv)}: refused")
            return
        finally:
            argparse.ArgumentParser.parse_args, sys.argv = parse, saved
        fail(f"-m {argv[1]}: never parsed its arguments")
    import common.cli
    from common.errors import UserError
    from common.grid import BIO_SCRIPTS, FUSION_SCRIPTS, SCRIPTS

    if not argv or Path(argv[0]).name not in [f"{script}.py" for script in SCRIPTS + FUSION_SCRIPTS + BIO_SCRIPTS]:
        fail(f"python {shlex.join(argv)}: not a script of the repository")

    resolve = common.cli._corpus_roots
    common.cli._corpus_roots = lambda settings: settings  # the corpus is not here: flags only
    try:
        common.cli.parse_script(Path(argv[0]).stem, argv[1:])
    except (UserError, ValueError) as error:
        fail(f"python {shlex.join(argv)}: {error}")
    except SystemExit as stop:
        if stop.code:
            fail(f"python {shlex.join(argv)}: refused")
    finally:
        common.cli._corpus_roots = resolve


def accelerate(argv: list[str]) -> None:
    from accelerate.commands.launch import launch_command_parser

    if argv[:1] != ["launch"]:
        fail(f"accelerate {argv[:1]}: only launch is documented")
    args = launch_command_parser().parse_args(argv[1:])
    python([args.training_script, *args.training_script_args])


def sbatch_options(argv: list[str]) -> tuple[str | None, str | None]:
    """(--wrap's command, the job script) of an sbatch command line."""
    wrap, script, rest = None, None, list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--wrap":
            wrap = rest.pop(0)
        elif arg.startswith("--wrap="):
            wrap = arg.split("=", 1)[1]
        elif arg.startswith("--") and "=" not in arg and arg != "--parsable":
            rest.pop(0)  # an option's value
        elif not arg.startswith("-"):
            script = arg
    return wrap, script


def sbatch(argv: list[str]) -> None:
    wrap, script = sbatch_options(argv)
    if wrap is not None:
        if subprocess.run(["bash", "-euo", "pipefail", "-c", wrap]).returncode:
            fail(f"--wrap {wrap!r} failed")
    else:
        text = Path(script).read_text()
        found = re.search(r"^#SBATCH --array=(\d+)-(\d+)$", text, re.M)
        before = len(recorded(os.environ["DOCS_SHIM_RECORD"]))
        for task in range(int(found[1]), int(found[2]) + 1) if found else [None]:
            env = os.environ | ({"SLURM_ARRAY_TASK_ID": str(task)} if task is not None else {})
            if subprocess.run(["bash", "-euo", "pipefail", script], env=env).returncode:
                fail(f"{script}: task {task} failed")
        if len(recorded(os.environ["DOCS_SHIM_RECORD"])) == before:
            fail(f"{script}: its tasks ran no python command")
    print("4242")


def hf(argv: list[str]) -> None:
    if argv[:1] != ["download"] or len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--local-dir"):
        fail(f"hf {shlex.join(argv)}: not 'hf download REPO [--local-dir DIR]'")


if __name__ == "__main__":
    {"accelerate": accelerate, "sbatch": sbatch, "hf": hf}[sys.argv[1]](sys.argv[2:])
