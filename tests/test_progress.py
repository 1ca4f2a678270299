"""Progress for the terminal: kernels note what they do, `python -m robustnb.book watch` shows it per chapter."""

import io
import json
import time

from robustnb import book, progress


def test_note_appends_and_throttles(tmp_env):
    progress._last.clear()
    progress.note("training cnn: epoch 1/3", every=0)
    progress.note("attacking: pgd batch 1/9")
    progress.note("attacking: pgd batch 2/9")  # within 2 s of the last line with the same key: dropped
    lines = progress.log_path().read_text().splitlines()
    assert [ln.split(" ", 1)[1] for ln in lines] == ["training cnn: epoch 1/3", "attacking: pgd batch 1/9"]


def test_watch_passes_the_build_through_and_adds_status_lines(tmp_env, monkeypatch, tmp_path):
    progress._last.clear()
    chapter = book.chapters()[1].stem
    monkeypatch.setenv("ROBUSTNB_PRESET", "cpu")
    monkeypatch.setattr(book.watching, "_expected", lambda root, preset: {chapter: 120.0})

    def build():
        yield "reading sources... [ 10%] book/intro\n"
        yield f"/x/book/{chapter}.ipynb: Executing notebook using local CWD [mystnb]\n"
        progress.note("training resnet: epoch 2/8 done", every=0)
        time.sleep(0.3)
        yield "writing output...\n"

    out = io.StringIO()
    assert book.watch(build(), out, interval=0.1) == 1
    text = out.getvalue()
    assert "reading sources" in text and "writing output" in text
    assert f"[1/{len(book.chapters())}] {chapter}" in text and "expected: about 2.0 min at cpu" in text
    assert "training resnet: epoch 2/8 done" in text
