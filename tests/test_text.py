"""sparktweet.text: the pure-Python tokeniser and its resource builder (no Spark)."""

from __future__ import annotations

import doctest
import gzip
import time
from pathlib import Path

import pytest

import sparktweet.text as text_module
from sparktweet.text import (
    LEMMAS_FILE,
    NEGATIONS,
    PLACEHOLDERS,
    RESOURCE_FILES,
    RESOURCES_DIR,
    TextPreprocessor,
    build_resources,
    tokenize,
)


@pytest.fixture(scope="module")
def pre() -> TextPreprocessor:
    return TextPreprocessor.load()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Delays &amp; lost bags &lt;3", ["delay", "lose", "bag", "xnum"]),
        ("&#128545; &#x1F44D; &bogus; &#0;", ["xemojineg", "xemojipos", "bogus", "xnum"]),
        ("Check HTTPS://t.co/AbC123 and www.united.com/bags", ["check", "xurl", "xurl"]),
        ("@united @AmericanAir thanks", ["xmention", "xmention", "thank"]),
        ("mail john@gmail.com", ["mail", "john", "gmail", "com"]),
        ("#fail #UnitedSucks #first_class", ["fail", "unitedsucks", "first", "class"]),
        ("love it 😍👍🏽 but 😡 ✈️ 🇺🇸", ["love", "xemojipos", "xemojipos", "xemojineg", "xemoji"]),
        ("I don't like it, not good", ["not", "like", "not", "good"]),
        ("I can't believe they won't help, never again", ["not", "believe", "not", "help", "never", "again"]),
        ("I didn’t get my bag and it’s United’s fault", ["not", "bag", "united", "fault"]),
        ("dont cant cannot nor none", ["not", "not", "not", "nor", "none"]),
        ("Cancelled Flights", ["cancel", "flight"]),
        ("worst flight delayed 3 hours", ["bad", "flight", "delay", "xnum", "hour"]),
        # Airline nouns the lookup table reads as verb forms ("crow", "numb", "grind").
        ("The crew gave me a confirmation number while we sat on the ground for a bit",
         ["crew", "confirmation", "number", "sit", "ground", "bit"]),
        ("Sooooo happy!!! at O'Hare", ["soo", "happy", "ohare"]),
        ("RT the a an it is", []),
    ],
)
def test_tokens_of_tricky_inputs(pre: TextPreprocessor, text: str, expected: list[str]) -> None:
    assert pre.tokenize(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, []),
        ("", []),
        ("   \n\t", []),
        (12345, []),
        (b"bytes are not text", []),
        ("\ud800 lone surrogate \udfff", ["lone", "surrogate"]),
        ("😡😡", ["xemojineg", "xemojineg"]),
        ("\u200d\ufe0f\U0001F3FD", []),
    ],
)
def test_odd_inputs_never_raise(pre: TextPreprocessor, text: object, expected: list[str]) -> None:
    assert pre.tokenize(text) == expected


def test_huge_text_is_tokenised_quickly(pre: TextPreprocessor) -> None:
    huge = "my bag was lost " * 6400 + "a" * 100_000 + "'" * 5000
    started = time.perf_counter()
    tokens = pre.tokenize(huge)
    assert tokens[:2] == ["bag", "lose"] and len(tokens) == 2 * 6400 + 1
    assert tokens[-1] == "aa"
    assert time.perf_counter() - started < 5


def test_module_tokenize_uses_package_resources() -> None:
    assert tokenize("Flights cancelled") == ["flight", "cancel"]


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(text_module)
    assert result.attempted >= 2 and result.failed == 0


def test_negations_and_placeholders_survive_the_stop_list(pre: TextPreprocessor) -> None:
    stop = (RESOURCES_DIR / "stopwords.txt").read_text(encoding="utf-8").split("\n")
    assert not {w for w in NEGATIONS if "'" not in w} & set(stop)
    assert {"the", "rt", "was"} <= set(stop)
    for token in PLACEHOLDERS:
        assert pre.tokenize(token) == [token]


def _contents(folder: Path, name: str) -> bytes:
    data = (folder / name).read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def test_builder_reproduces_committed_resources(tmp_path: Path) -> None:
    written = build_resources(tmp_path)
    assert [p.name for p in written] == list(RESOURCE_FILES)
    for name in RESOURCE_FILES:
        assert _contents(tmp_path, name) == _contents(RESOURCES_DIR, name), f"{name} differs; run python -m sparktweet.text build-resources"
    assert (RESOURCES_DIR / LEMMAS_FILE).stat().st_size < 1_000_000


def test_loading_from_a_folder_uses_that_folder(tmp_path: Path) -> None:
    build_resources(tmp_path)
    (tmp_path / "stopwords.txt").write_text("flight\n", encoding="utf-8")
    assert TextPreprocessor.load(tmp_path).tokenize("the flights") == ["the"]


def test_cli_tokenize(capsys: pytest.CaptureFixture[str]) -> None:
    assert text_module.main(["tokenize", "cancelled flights", "@delta thanks"]) == 0
    assert capsys.readouterr().out == "cancel flight\nxmention thank\n"
