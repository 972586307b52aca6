"""Stand-ins for the commands of the documentation's `parse` blocks, which need the real corpus, a GPU or a
cluster: each checks its command line the way the real command would and does no work.

    python X.py ARGS            the script's own argument checks (common.cli.parse_args), no folder checks
    python -m common.M ARGS     the module's argument parser
    accelerate launch ...       accelerate's launch parser, then the script as above
    sbatch [--wrap CMD | FILE]  CMD run through bash; FILE run through bash once per task of its --array (the
                                tasks' python command lines are recorded, then checked in one process)
    hf download REPO --local-dir DIR
"""

import argparse
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fail(message: str) -> None:
    print(f"docs_shim: {message}", file=sys.stderr)
    raise SystemExit(2)


def python(argv: list[str]) -> None:
    record = os.environ.get("DOCS_SHIM_RECORD")
    if record:  # an sbatch task: its command line is checked by sbatch, with the others
        with open(record, "a") as f:
            f.write(json.dumps(argv) + "\n")
        return
    if argv[:1] == ["-m"]:
        original = argparse.ArgumentParser.parse_args

        def parse_only(self, args=None, namespace=None):
            original(self, args, namespace)
            raise SystemExit(0)

        argparse.ArgumentParser.parse_args = parse_only
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__")
        fail(f"-m {argv[1]}: never parsed its arguments")
    if not argv or not argv[0].endswith(".py"):
        fail(f"python {shlex.join(argv)}: not a script of the repository")
    import common.cli
    from common.errors import UserError
    from common.grid import cell_of

    common.cli.resolve_dataset_dir = lambda args: None  # the corpus is not here: flags only
    try:
        common.cli.parse_args(cell_of(Path(argv[0]).stem), argv[1:])
    except (UserError, ValueError) as error:
        fail(str(error))


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
        record = Path(f"{script}.commands")
        record.unlink(missing_ok=True)
        for task in range(int(found[1]), int(found[2]) + 1) if found else [None]:
            env = os.environ | {"DOCS_SHIM_RECORD": str(record.resolve())}
            env |= {"SLURM_ARRAY_TASK_ID": str(task)} if task is not None else {}
            if subprocess.run(["bash", "-euo", "pipefail", script], env=env).returncode:
                fail(f"{script}: task {task} failed")
        commands = [json.loads(line) for line in record.read_text().splitlines()] if record.is_file() else []
        if not commands:
            fail(f"{script}: its tasks ran no python command")
        for argv in commands:
            python(argv)
    print("4242")


def hf(argv: list[str]) -> None:
    if len(argv) != 4 or argv[0] != "download" or argv[2] != "--local-dir":
        fail(f"hf {shlex.join(argv)}: not 'hf download REPO --local-dir DIR'")


if __name__ == "__main__":
    {"python": python, "accelerate": accelerate, "sbatch": sbatch, "hf": hf}[sys.argv[1]](sys.argv[2:])
