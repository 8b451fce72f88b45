"""NLTK data built from local sources loads in NLTK and never triggers a download."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tuneops.tasks.evaluation import nltk_data
from tuneops.tasks.evaluation.nltk_data import RESOURCES, available_resources, ensure_nltk_data


def test_all_resources_are_built(nltk_dir: Path) -> None:
    assert available_resources(nltk_dir) == set(RESOURCES)
    with zipfile.ZipFile(nltk_dir / "corpora/wordnet.zip") as archive:
        names = set(archive.namelist())
    assert {"wordnet/lexnames", "wordnet/index.sense", "wordnet/data.noun"} <= names


def test_nltk_reads_them_without_downloading(nltk_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    monkeypatch.setattr(nltk, "download", lambda *a, **k: pytest.fail(f"nltk.download{a} called"))
    monkeypatch.setattr(nltk.data, "path", nltk.data.path)  # restored after the test
    nltk.data.path.insert(0, str(nltk_dir))
    from nltk.tokenize.nist import NISTTokenizer  # reads perluniprops at import time

    for rel in RESOURCES.values():
        nltk.data.find(rel)
    assert nltk.word_tokenize("Dr. Smith went to Oslo. He liked it.") == [
        "Dr.", "Smith", "went", "to", "Oslo", ".", "He", "liked", "it", "."
    ]  # fmt: skip
    wordnet = WordNetCorpusReader(nltk.data.find("corpora/wordnet.zip/wordnet/"), omw_reader=object())
    assert "city.n.01" in {s.name() for s in wordnet.synsets("city")}
    assert NISTTokenizer().international_tokenize("Ça coûte 5 €.")[-2:] == ["€", "."]


def test_second_call_builds_nothing(nltk_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nltk_data, "_write_zip", lambda *a: pytest.fail("rebuilt"))
    assert ensure_nltk_data(nltk_dir) == set(RESOURCES)


def test_missing_wordnet_source_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    available = ensure_nltk_data(tmp_path, wordnet_source=tmp_path / "no-wordnet")
    assert available == set(RESOURCES) - {"wordnet"}
    assert "apt-get install -y wordnet-base wordnet-sense-index" in caplog.text
