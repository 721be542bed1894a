"""text (KJV chapter classification) on a tiny fake `bible -f` export."""

import numpy as np
import pytest
import torch

from longseq.tasks import build, text


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path / "cache"))


def make_export(path, chapters_per_book=3, verses=4):
    lines = []
    for bi, book in enumerate(text.BOOKS):
        for c in range(1, chapters_per_book + 1):
            for v in range(1, verses + 1):
                lines.append(f"{book}{c}:{v} book{bi:02d} chapter {c} verse {v} and it came to pass.")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_parse_and_groups(tmp_path):
    chapters = text.parse_chapters(make_export(tmp_path / "kjv.txt").read_bytes())
    assert len(chapters) == 66 * 3
    b, c, t = chapters[0]
    assert (b, c) == (0, 1) and t.startswith(b"book00 chapter 1 verse 1") and t.count(b"\n") == 3
    assert b"Ge1:1" not in t
    assert [text.book_group(i) for i in (0, 4, 5, 16, 17, 21, 22, 38, 39, 43, 44, 64, 65)] == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        4,
        5,
        5,
        6,
    ]
    with pytest.raises(ValueError, match="line 1"):
        text.parse_chapters(b"Foo1:1 not a book\n")


def test_text_testament_fixture(tmp_path):
    src = str(make_export(tmp_path / "kjv.txt"))
    t = build("text", preset="lra", seed=0, source=src, seq_len=128)
    assert t.meta.num_classes == 2 and t.meta.seq_len == 128 and t.meta.vocab_size == 256
    e = t.meta.extra
    # chapters: 39 * 3 OT, 27 * 3 NT, stratified 80/10/10; train oversampled to balance
    total = np.sum([e["chapter_counts"][s] for s in ("train", "validation", "test")], axis=0)
    assert total.tolist() == [117, 81]
    assert e["class_counts"]["train"][0] == e["class_counts"]["train"][1] == e["chapter_counts"]["train"][0]
    assert e["class_counts"]["test"] == e["chapter_counts"]["test"]
    assert e["majority_baseline"]["test"] == max(e["class_counts"]["test"]) / sum(e["class_counts"]["test"])
    b = t.test.batch(torch.arange(len(t.test)))
    assert b["inputs"].shape == (len(t.test), 128) and b["mask"].dtype == torch.bool
    for x, m, y in zip(b["inputs"], b["mask"], b["targets"]):
        doc = bytes(x[m].tolist())
        assert (int(doc[4:6]) >= 39) == bool(y)  # "bookNN": NT books are 39..65
        assert (x[~m] == 0).all() and m[: int(m.sum())].all()
    assert build("text", preset="lra", seed=0, source=src, seq_len=128).train.fingerprint() == t.train.fingerprint()
    assert build("text", preset="lra", seed=1, source=src, seq_len=128).test.fingerprint() != t.test.fingerprint()


def test_text_balance_all(tmp_path):
    src = str(make_export(tmp_path / "kjv.txt"))
    t = build("text", preset="quick", source=src, seq_len=64)
    for s in ("train", "validation", "test"):
        c = t.meta.extra["class_counts"][s]
        assert c[0] == c[1] > 0
        assert t.meta.extra["majority_baseline"][s] == 0.5


def test_text_group_windows(tmp_path):
    src = str(make_export(tmp_path / "kjv.txt"))
    t = build("text", preset="lra_group", source=src, seq_len=64, window=True, balance="none")
    assert t.meta.num_classes == 7
    e = t.meta.extra
    assert all(c > 0 for c in e["chapter_counts"]["train"])
    # every chapter (~260 bytes) gives several 64-byte windows; all windows of a chapter share a split
    assert sum(e["class_counts"]["train"]) >= 3 * sum(e["chapter_counts"]["train"])
    lengths = t.train.lengths.numpy()
    assert lengths.max() == 64 and lengths.min() >= 16


def test_text_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(text.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="bible-kjv"):
        build("text")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build("text", source=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="balance"):
        build("text", source=str(make_export(tmp_path / "kjv.txt")), balance=True)
    with pytest.raises(ValueError, match="label"):
        build("text", source=str(make_export(tmp_path / "kjv.txt")), label="book")
