"""The `run` blocks of the pages that do not continue the README's tour, in a fresh tree of their own (so that
another worker runs them beside the tour)."""

from test_docs import PAGES, TOUR_PAGES, fresh_tree, run_blocks, shell_blocks


def test_every_other_pages_run_blocks_work_as_printed(tmp_path):
    pages = [page for page in PAGES if page not in TOUR_PAGES]
    work, env = fresh_tree(tmp_path)
    done = run_blocks(pages, work, env)
    tour = {text for page in TOUR_PAGES for kind, _, text in shell_blocks(page) if kind == "run"}
    every = {text for page in PAGES for kind, _, text in shell_blocks(page) if kind == "run"}
    assert done | tour == every and len(done) >= 3
