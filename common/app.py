"""A local web page over trained runs: try a run on a clip, listen to the test utterances it gets wrong, read the
report.

    python -m common.app runs/demo/multimodal_total_concat/KEMDy20/fold1   # one run
    python -m common.app runs/demo                                         # every finished run under a folder

The page is Gradio's, an optional install (`pip install -r requirements-app.txt`). It serves on 127.0.0.1, this
machine only, unless --host says otherwise. Three tabs:

- Try it: a recording (uploaded or recorded) and its transcript; each emotion's probability, the valence/arousal
  point on the 1-5 plane, and the answer exactly as `common.predict` prints it.
- Errors: the run's test utterances, filtered by true and by most probable emotion (or by a click on a cell of
  the confusion matrix, which counts them the same way as the run's confusion.csv), each with its transcript,
  its probabilities and, when selected, its recording in a player.
- Report: `common.report`'s tables and figures of the folder, where it has been run.
"""

# No `from __future__ import annotations`: Gradio reads the event handlers' `gr.SelectData` annotations as objects.
import argparse
import html
import json
import os
import urllib.parse
from pathlib import Path

import numpy as np

from common import paths, rundir
from common.errors import UserError, run_cli
from common.grid import DIMENSIONS, EMOTIONS
from common.runfiles import read_config

ANY = "any"
REPORT = Path("report") / "results.md"  # where common.report writes a folder's tables


def finished_runs(root: Path, log=print) -> list[Path]:
    """`root` if it is a finished run with a saved model, else every such run under it, in path order; a folder
    whose marker is damaged is left out, and said so."""

    def finished(folder: Path) -> bool:
        return (folder / "metrics.json").is_file() and (folder / "model" / "model.json").is_file()

    if rundir.read_run(root) is not None:
        return [root] if finished(root) else []
    found = []
    for folder, subfolders, _ in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in rundir.RUN_FILES)  # no run lies inside a run's own
        here = Path(folder)
        if here == root or not (here / rundir.MARKER).is_file():
            continue
        try:
            if rundir.read_run(here) is not None and finished(here):
                found.append(here)
        except rundir.DamagedMarker as err:
            log(f"left out: {err}")
    return found


class RunView:
    """What the page shows of one run: its predictor, and its test utterances with what it answered."""

    def __init__(self, run_dir: Path):
        from common import robustness

        self.run_dir = run_dir
        self.run = robustness.FinishedRun(run_dir, log=lambda _: None)
        self.predictor, truth = self.run.predictor, self.run.truth
        self.classifies = truth.probs is not None
        utterances = [self.run.utterances[k] for k in self.run.test]
        self.rows = []
        for i, u in enumerate(utterances):
            row = {"segment": u.segment_id, "true": [e for e, y in zip(EMOTIONS, truth.labels[i], strict=True) if y]}
            row |= {"transcript": u.text, "wav": str(u.wav)}
            if self.classifies:
                row["predicted"] = EMOTIONS[int(np.argmax(truth.probs[i]))]
                row["probabilities"] = dict(zip(EMOTIONS, map(float, truth.probs[i]), strict=True))
            if truth.va_pred is not None:
                row |= {f"true_{d}": float(truth.va[i, j]) for j, d in enumerate(DIMENSIONS)}
                row |= {f"pred_{d}": float(truth.va_pred[i, j]) for j, d in enumerate(DIMENSIONS)}
            self.rows.append(row)

    def chosen(self, true: str = ANY, predicted: str = ANY) -> list[dict]:
        """The test utterances whose true emotions include `true` and whose most probable one is `predicted`."""
        return [
            r
            for r in self.rows
            if (true == ANY or true in r["true"]) and (predicted == ANY or r.get("predicted") == predicted)
        ]

    def table(self, rows: list[dict]):
        """The errors table: one line per utterance, wrong ones first (then by segment); for a run that only
        regresses, the largest valence + arousal error first."""
        import pandas as pd

        lines = []
        for r in rows:
            line = {"segment": r["segment"], "true": ", ".join(r["true"])}
            if self.classifies:
                line["predicted"] = r["predicted"]
                line["correct"] = "yes" if r["predicted"] in r["true"] else "no"
                line["p(predicted)"] = round(r["probabilities"][r["predicted"]], 3)
            for d in DIMENSIONS if "pred_valence" in r else ():
                line[d] = f"{r[f'pred_{d}']:.2f} (true {r[f'true_{d}']:.1f})"
            if "pred_valence" in r and not self.classifies:  # a regression run's errors: the farthest first
                line["error"] = round(sum(abs(r[f"pred_{d}"] - r[f"true_{d}"]) for d in DIMENSIONS), 2)
            line["transcript"] = r["transcript"]
            lines.append(line)
        frame = pd.DataFrame(lines, columns=list(lines[0]) if lines else ["segment", "true", "transcript"])
        if self.classifies and len(frame):
            frame = frame.sort_values(["correct", "segment"], kind="stable").reset_index(drop=True)
        elif "error" in frame:
            frame = frame.sort_values("error", ascending=False, kind="stable").reset_index(drop=True)
        return frame

    def confusion(self):
        """Test utterances by true emotion (rows; a multi-label one in each of its rows) and most probable emotion
        (columns), as the run's confusion.csv counts them."""
        import pandas as pd

        counts = [[len(self.chosen(t, p)) for p in EMOTIONS] for t in EMOTIONS]
        return pd.DataFrame([[t, *c] for t, c in zip(EMOTIONS, counts, strict=True)], columns=["true", *EMOTIONS])

    def predict(self, wav: str | None, text: str | None, bio: str | None = None) -> dict:
        """The answer `common.predict` prints for one utterance (`bio`: its bio-signal samples file, for a run
        that reads them)."""
        p = self.predictor
        if p.uses_speech and not wav:
            raise UserError("this run reads speech: give a recording")
        if p.uses_text and not (text or "").strip():
            raise UserError("this run reads transcripts: type the transcript")
        if p.signals and not bio:
            raise UserError("this run reads bio-signals: give their samples (a signal,value CSV)")
        bios = [bio] if p.signals else None
        result = p([wav] if p.uses_speech else None, [text] if p.uses_text else None, bios=bios)[0]
        inputs = ({"wav": wav} if p.uses_speech else {}) | ({"text": text} if p.uses_text else {})
        return inputs | ({"bio": bio} if p.signals else {}) | result


def va_figure(answer: dict | None):
    """The valence/arousal point on the 1-5 plane (empty where the run does not regress)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    ax.set(xlim=(1, 5), ylim=(1, 5), xlabel="valence", ylabel="arousal", title="valence / arousal")
    ax.axhline(3, color="0.85", lw=0.8)
    ax.axvline(3, color="0.85", lw=0.8)
    if answer and "valence" in answer:
        ax.plot([answer["valence"]], [answer["arousal"]], "o", color="tab:red", ms=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


def player_html(wav: str | None) -> str:
    """The browser's own audio player on a recording, served by the page from the run's corpus (`allowed_paths`)."""
    if wav is None:
        return "<p>Select an utterance to hear it.</p>"
    source = html.escape(urllib.parse.quote(str(Path(wav).resolve())), quote=True)
    return f'<audio controls preload="auto" src="/gradio_api/file={source}"></audio>'


def report_of(root: Path) -> tuple[str, list[str]]:
    """(common.report's results.md, its figures) of the folder, or of the nearest folder above a run that has one."""
    for folder in (root, *root.parents):
        if (folder / REPORT).is_file():
            figures = sorted(str(p) for p in (folder / REPORT.parent / "figures").glob("*.png"))
            return (folder / REPORT).read_text(encoding="utf-8"), figures
    return f"No report yet: run `python -m common.report {root}` and open the page again.", []


def page(root: Path, runs: list[Path]):
    """The Gradio page over `runs` (found under `root`): a run to choose, and the three views of it."""
    import gradio as gr

    views: dict[str, RunView] = {}

    def view(name: str) -> RunView:  # each run read once, when first shown
        if name not in views:
            views[name] = RunView(Path(name))
        return views[name]

    names = [str(r) for r in runs]
    with gr.Blocks(title="KEMDy emotion recognition") as blocks:
        gr.Markdown("# KEMDy emotion recognition")
        run = gr.Dropdown(names, value=names[0], label="Run", elem_id="run")
        with gr.Tab("Try it", elem_id="try"):
            _try_it(run, view, view(names[0]))
        with gr.Tab("Errors", elem_id="errors-tab"):
            _errors(blocks, run, view, view(names[0]))
        with gr.Tab("Report", elem_id="report"):
            text, figures = report_of(root)
            gr.Markdown(text)
            if figures:
                gr.Gallery(figures, columns=2, label="Figures", elem_id="figures")
    return blocks


def _try_it(run, view, first: RunView) -> None:
    """A recording, its transcript and (for a run that reads them) its bio-signal samples in; the probabilities, the
    valence/arousal point and the printed answer out."""
    import gradio as gr

    def answer(name, wav, text, bio):
        try:
            result = view(name).predict(wav, text, bio)
        except UserError as err:
            raise gr.Error(str(err)) from None
        return json.dumps(result, ensure_ascii=False, indent=1), result.get("probabilities", {}), va_figure(result)

    def shown(v: RunView) -> tuple[bool, bool, bool]:  # the inputs the run reads
        p = v.predictor
        return p.uses_speech, p.uses_text, bool(p.signals)

    with gr.Row():
        with gr.Column():
            reads = shown(first)
            wav = gr.Audio(
                sources=["upload", "microphone"], type="filepath", label="Recording", visible=reads[0], elem_id="wav"
            )
            transcript = gr.Textbox(label="Transcript", visible=reads[1], elem_id="transcript")
            bio = gr.File(
                label="Bio-signal samples (signal,value CSV)", type="filepath", visible=reads[2], elem_id="bio"
            )
            go = gr.Button("Predict", variant="primary", elem_id="predict")
        with gr.Column():
            probabilities = gr.Label(num_top_classes=len(EMOTIONS), label="Emotions", elem_id="emotions")
            plane = gr.Plot(va_figure(None), label="Valence / arousal (1-5)")
    printed = gr.Textbox(label="As common.predict prints it", lines=8, elem_id="answer")
    go.click(answer, [run, wav, transcript, bio], [printed, probabilities, plane])
    run.change(lambda name: [gr.update(visible=v) for v in shown(view(name))], [run], [wav, transcript, bio])


def _errors(blocks, run, view, first: RunView) -> None:
    """The confusion matrix, the two filters it sets, the utterances they keep, and the one selected."""
    import gradio as gr

    def errors(name, true, predicted):
        v = view(name)
        rows = v.chosen(true or ANY, predicted or ANY)
        count = f"**{len(rows)}** of {len(v.rows)} test utterances"
        if v.classifies:
            count += f", {sum(r['predicted'] not in r['true'] for r in rows)} of them wrong"
        return v.table(rows), count

    def from_confusion(event: gr.SelectData):
        row, column = event.index
        return EMOTIONS[row], EMOTIONS[column - 1] if column else ANY

    def listen(name, table, event: gr.SelectData):
        segment = table.iloc[event.index[0]]["segment"]
        (row,) = [r for r in view(name).rows if r["segment"] == segment]
        return player_html(row["wav"]), row.get("probabilities", {}), f"{segment}: {row['transcript']}"

    def chosen_run(name):
        v = view(name)
        return (v.confusion() if v.classifies else None), *errors(name, ANY, ANY), ANY, ANY

    gr.Markdown("A click on a cell of the confusion matrix keeps its utterances; a click on a row plays it.")
    matrix = first.confusion() if first.classifies else None
    confusion = gr.Dataframe(matrix, interactive=False, elem_id="confusion")
    with gr.Row():
        true = gr.Dropdown([ANY, *EMOTIONS], value=ANY, label="True emotion", elem_id="true")
        predicted = gr.Dropdown([ANY, *EMOTIONS], value=ANY, label="Most probable", elem_id="predicted")
    count = gr.Markdown(elem_id="count")
    table = gr.Dataframe(interactive=False, wrap=True, elem_id="table")
    with gr.Row():
        player = gr.HTML(player_html(None), elem_id="player")
        selected = gr.Label(num_top_classes=3, label="Its probabilities", elem_id="selected")
    said = gr.Markdown(elem_id="said")
    for dropdown in (true, predicted):
        dropdown.change(errors, [run, true, predicted], [table, count])
    confusion.select(from_confusion, None, [true, predicted])
    table.select(listen, [run, table], [player, selected, said])
    run.change(chosen_run, [run], [confusion, table, count, true, predicted])
    blocks.load(errors, [run, true, predicted], [table, count])


def main(argv: list[str] | None = None) -> None:
    from common.cli import HelpFormatter

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="python -m common.app",
        description="A local web page over finished runs: try one on a clip, listen to its errors, read the report "
        "(needs pip install -r requirements-app.txt).",
    )
    parser.add_argument("folder", metavar="RUN_DIR_OR_RUNS", help="a finished run, or a folder of them")
    parser.add_argument("--port", type=int, default=7860, help="the port to serve on")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to serve on: 127.0.0.1 is this machine only; 0.0.0.0 lets the network in",
    )
    args = parser.parse_args(argv)
    paths.check("RUN_DIR_OR_RUNS", args.folder)
    root = Path(args.folder)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    runs = finished_runs(root)
    if not runs:
        raise UserError(f"{root}: holds no finished run with a saved model (train one without --no-save_model)")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the page reports nothing to anyone
    try:
        import gradio
    except ImportError:
        raise UserError("the page needs Gradio: pip install -r requirements-app.txt") from None
    del gradio
    blocks = page(root, runs)
    # The recordings the errors tab plays, and the report's figures: Gradio serves no other file.
    corpora = {str(Path(read_config(r)["args"]["dataset_dir"]).resolve()) for r in runs}
    print(f"{len(runs)} finished run{'s' * (len(runs) != 1)} under {root}; serving on http://{args.host}:{args.port}")
    blocks.launch(
        server_name=args.host,
        server_port=args.port,
        allowed_paths=sorted(corpora | {str(root.resolve())}),
        ssr_mode=False,
        footer_links=[],
        quiet=True,
    )


if __name__ == "__main__":
    run_cli(main)
