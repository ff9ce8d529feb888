"""Tweet text to tokens, in pure Python (no pyspark): the reference the JVM backend mirrors.

The steps, in order (``jvm/preprocess/.../TweetPreprocess.java`` implements the same ones, and
``tests/test_preprocessing.py`` checks both give the same tokens on Tweets.csv):

1. HTML entities are unescaped: ``&amp; &lt; &gt; &quot; &apos; &nbsp;`` and numeric ones.
   Deliberately not :func:`html.unescape`, whose 2,000-odd HTML5 names and lenient rules
   (entities without ``;``) a Java port could not match exactly.
2. The text is lowercased.
3. URLs (``http://``, ``https://``, ``www.``) become ``xurl``; @mentions become ``xmention``
   (the airline handle carries no sentiment); the ``#`` of a hashtag is dropped with the other
   punctuation, so ``#fail`` gives ``fail``.
4. Emoji become ``xemojipos``, ``xemojineg`` or ``xemoji`` (table in ``resources/emoji.tsv``);
   skin tones and flag letters are dropped. Typographic apostrophes become ``'``.
5. Tokens are the runs of letters and digits (``str.isalnum``), with inner apostrophes kept so
   contractions can be split. In each token, a letter repeated three times or more is squashed
   to two (``soooo`` gives ``soo``).
6. Contractions: ``n't`` becomes a separate ``not`` (``don't`` gives ``do``, ``not``), the
   forms in ``resources/contractions.tsv`` likewise (``can't``, ``dont``, ``cannot``); clitics
   (``'s 're 've 'll 'd 'm``) are dropped, other apostrophes removed (``o'hare`` gives
   ``ohare``). Tokens made only of digits become ``xnum``.
7. Stop words (spaCy's English list minus negations and a few airline words, plus tweet noise
   such as ``rt``) are removed, before and after lemmatisation; negations (``not no never nor
   cannot none nothing``...) are kept.
8. Lemmas come from spacy-lookups-data's English lookup table (``cancelled`` gives ``cancel``,
   ``flights`` gives ``flight``) with a few overrides for the domain (``united`` stays).

The resource files under ``sparktweet/resources/`` are built by ``python -m sparktweet.text
build-resources`` and committed; the JVM jar bundles the same files.

Examples
--------
>>> from sparktweet.text import tokenize
>>> tokenize("@united I didn't get my bags &amp; 2 flights were cancelled! http://t.co/x #fail")
['xmention', 'not', 'bag', 'xnum', 'flight', 'cancel', 'xurl', 'fail']
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import re
import shutil
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources as importlib_resources
from pathlib import Path

logger = logging.getLogger(__name__)

RESOURCES_DIR = Path(__file__).resolve().parent / "resources"
LEMMAS_FILE = "lemmas.tsv.gz"
STOPWORDS_FILE = "stopwords.txt"
EMOJI_FILE = "emoji.tsv"
CONTRACTIONS_FILE = "contractions.tsv"
LEMMAS_LICENSE_FILE = "LICENSE-lemmas.txt"
RESOURCE_FILES = (LEMMAS_FILE, STOPWORDS_FILE, EMOJI_FILE, CONTRACTIONS_FILE, LEMMAS_LICENSE_FILE)

URL_TOKEN = "xurl"
MENTION_TOKEN = "xmention"
NUMBER_TOKEN = "xnum"
EMOJI_TOKEN = "xemoji"
POSITIVE_EMOJI_TOKEN = "xemojipos"
NEGATIVE_EMOJI_TOKEN = "xemojineg"
EXCLAMATION_TOKEN = "xexcl"
QUESTION_TOKEN = "xquest"
PLACEHOLDERS = (URL_TOKEN, MENTION_TOKEN, NUMBER_TOKEN, EMOJI_TOKEN, POSITIVE_EMOJI_TOKEN, NEGATIVE_EMOJI_TOKEN)

# --- what the resource builder bakes into the files ------------------------------------------

# Negations carry the sentiment of "not good" and "never arrived"; spaCy lists them as stop words.
NEGATIONS = frozenset(
    {"no", "not", "never", "nor", "n't", "nt", "cannot", "none", "nobody", "noone", "nothing",
     "neither", "nowhere", "without"}
)
# spaCy stop words that matter for airline support: "call back", "first class", "full flight",
# "last flight", "front row", "please help", "delayed again".
DOMAIN_KEEP = frozenset({"call", "back", "first", "last", "full", "empty", "front", "please", "again"})
# Tweet noise spaCy does not list: retweet marker, texting forms of "you", "your", "I'm".
EXTRA_STOP_WORDS = frozenset({"rt", "u", "ur", "im", "ive", "amp"})
# Lookup-table entries that are wrong for tweets: the table lemmatises adverbs ("better" ->
# "well", "worse" -> "wrong"), knows no airline names ("united" -> "unite") and reads common
# airline nouns as verb forms ("crew" -> "crow", "number" -> "numb", "ground" -> "grind"). A value
# equal to the key removes the entry.
LEMMA_OVERRIDES: Mapping[str, str] = {
    "united": "united",
    "media": "media",
    "crew": "crew",
    "number": "number",
    "ground": "ground",
    "matter": "matter",
    "rent": "rent",
    "bit": "bit",
    "data": "data",
    "better": "good",
    "best": "good",
    "worse": "bad",
    "worst": "bad",
    "pls": "please",
    "plz": "please",
    "thx": "thank",
}
# Apostrophe-less negative contractions, as typed on phones, and the irregular n't forms.
CONTRACTIONS: Mapping[str, str] = {
    "can't": "can not", "won't": "will not", "shan't": "shall not", "ain't": "be not",
    "cannot": "can not", "cant": "can not", "wont": "will not", "aint": "be not",
    "dont": "do not", "doesnt": "does not", "didnt": "did not", "isnt": "is not", "arent": "are not",
    "wasnt": "was not", "werent": "were not", "havent": "have not", "hasnt": "has not", "hadnt": "had not",
    "couldnt": "could not", "shouldnt": "should not", "wouldnt": "would not", "mustnt": "must not",
    "neednt": "need not",
}
# Emoji whose sentiment is clear in customer tweets (after Novak et al., 2015, "Sentiment of
# Emojis"); every other emoji becomes the neutral placeholder.
POSITIVE_EMOJI = (
    "😀😁😂🤣😃😄😅😆😉😊😋😎😍😘🥰😗😙😚🙂🤗🤩😇😌😛😜😝🥳😺😸😹😻😽"
    "👍👌👏🙌🙏💪✌☺❤♥💙💚💛💜🧡🖤💗💖💕💞💓💝💘🎉🎊✨🌟⭐💯✅✔🏆"
)
NEGATIVE_EMOJI = (
    "😞😟😠😡🤬😢😣😤😥😦😧😨😩😪😫😬😭😰😱😖😕🙁☹😒😑😔😓🙄🤦😷🤢🤮😵😾😿🙀"
    "💔👎💩👿🆘❌🚫⛔"
)
# Code point ranges treated as emoji: Mahjong to Symbols Extended-A, Misc Technical (clocks),
# Misc Symbols and Dingbats, plus single stars and marks outside those blocks.
EMOJI_RANGES = ((0x1F000, 0x1FAFF), (0x2300, 0x23FF), (0x2600, 0x27BF), (0x2B50, 0x2B55), (0x3030, 0x3030), (0x303D, 0x303D))
# Modifiers inside those ranges that are not emoji of their own: skin tones, flag letters.
EMOJI_DROPPED = ((0x1F3FB, 0x1F3FF), (0x1F1E6, 0x1F1FF))

# --- the text pipeline -------------------------------------------------------------------------

_NAMED_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'", "nbsp": "\xa0"}
_ENTITY_RE = re.compile(r"&(?:#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6})|(amp|lt|gt|quot|apos|nbsp));")
# Python's own \s for str patterns, spelled out so the Java regex can use the same set.
_WS = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_URL_RE = re.compile(rf"(?:https?://|www\.)[^{_WS}]*")
# The lookbehind sits after the "@" so the regex engine can scan for the literal first.
_MENTION_RE = re.compile(r"@(?<![A-Za-z0-9_]@)[A-Za-z0-9_]+")
# [^\W_] is a letter or digit (str.isalnum); [^\W\d_] a letter or non-decimal number.
_SQUASH_RE = re.compile(r"([^\W\d_])\1{2,}")
_TOKEN_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
# Faster than _TOKEN_RE and never splits one of its tokens; the rare loose token holding an
# underscore is re-split with _TOKEN_RE, which gives exactly _TOKEN_RE's tokens.
_LOOSE_TOKEN_RE = re.compile(r"\w+(?:'\w+)*")
_WORD_RE = re.compile(r"[^\W_]+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})
_CLITICS = ("'s", "'re", "'ve", "'ll", "'d", "'m")
_MAX_MEMO = 200_000


def _unescape(match: re.Match[str]) -> str:
    dec, hexa, name = match.groups()
    if name:
        return _NAMED_ENTITIES[name]
    code = int(dec) if dec else int(hexa, 16)
    # Invalid code points and surrogates stay as written, like unknown entities.
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return match.group(0)
    return chr(code)


def _emoji_class(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


class TextPreprocessor:
    """Turns one tweet text into a list of normalised, lemmatised tokens.

    Parameters
    ----------
    lemmas : Mapping[str, str]
        Lowercase word to lemma, only for words whose lemma differs.
    stop_words : Iterable[str]
        Lowercase words to drop (negations excluded by the builder).
    emoji : Mapping[str, str]
        Emoji character to token; an empty token drops the character.
    emoji_ranges : Sequence[tuple[int, int]]
        Inclusive code point ranges of characters treated as emoji; those not in ``emoji`` get
        the neutral ``xemoji`` token.
    contractions : Mapping[str, str]
        Token to its space-separated expansion (``"dont"`` to ``"do not"``).

    Examples
    --------
    >>> pre = TextPreprocessor.load()
    >>> pre.tokenize("Flight Cancelled Flightled 😡 @AmericanAir can't rebook me")
    ['flight', 'cancel', 'flightled', 'xemojineg', 'xmention', 'not', 'rebook']
    """

    def __init__(
        self,
        lemmas: Mapping[str, str],
        stop_words: Iterable[str],
        emoji: Mapping[str, str],
        emoji_ranges: Sequence[tuple[int, int]],
        contractions: Mapping[str, str],
        keep_marks: bool = False,
    ) -> None:
        self._keep_marks = keep_marks
        self._lemmas = dict(lemmas)
        self._stop = frozenset(stop_words)
        self._emoji = {char: f" {token} " if token else " " for char, token in emoji.items()}
        self._emoji_re = re.compile(f"[{_emoji_class(emoji_ranges)}{''.join(map(re.escape, emoji))}]")
        self._contractions = {word: tuple(expansion.split()) for word, expansion in contractions.items()}
        # Tokens repeat across tweets, so each distinct token is normalised once per process.
        self._memo: dict[str, tuple[str, ...]] = {}

    @classmethod
    def load(cls, directory: str | Path | None = None, *, keep_stop_words: bool = False, keep_marks: bool = False) -> TextPreprocessor:
        """Read the resource files from ``directory`` (default: the package's ``resources``).

        ``keep_stop_words=True`` gives the variant the sentiment LSTM reads: the same steps without
        the stop-word filter, since "but", "so", "what" and "very" carry sentiment that topic words
        do not (the LSTM stages' ``keepStopWords`` param).

        ``keep_marks=True`` also keeps what punctuation says: a run of ``!`` gives ``xexcl``, of ``?``
        ``xquest`` (questions are mostly neutral), and ASCII emoticons the emoji tokens (``:)`` gives
        ``xemojipos``, ``:(`` ``xemojineg``). Python only: the JVM backend mirrors the default variant.
        """
        root = importlib_resources.files("sparktweet").joinpath("resources") if directory is None else Path(directory)
        with root.joinpath(LEMMAS_FILE).open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
            lemmas = dict(_parse_tsv(fh, 2))
        with root.joinpath(STOPWORDS_FILE).open("r", encoding="utf-8") as fh:
            stop_words = [] if keep_stop_words else [row[0] for row in _parse_tsv(fh, 1)]
        with root.joinpath(EMOJI_FILE).open("r", encoding="utf-8") as fh:
            emoji_rows = list(_parse_tsv(fh, 2))
        with root.joinpath(CONTRACTIONS_FILE).open("r", encoding="utf-8") as fh:
            contractions = dict(_parse_tsv(fh, 2))
        emoji: dict[str, str] = {}
        ranges: list[tuple[int, int]] = []
        for code, token in emoji_rows:
            first, _, last = code.partition("-")
            if last:
                ranges.append((int(first, 16), int(last, 16)))
            else:
                emoji[chr(int(first, 16))] = "" if token == "-" else token
        return cls(lemmas, stop_words, emoji, ranges, contractions, keep_marks=keep_marks)

    def tokenize(self, text: object) -> list[str]:
        """Tokens of ``text``; ``[]`` for None, non-strings, empty or token-free text. Never raises."""
        if not isinstance(text, str) or not text:
            return []
        try:
            return self._tokenize(text)
        except Exception:  # one odd tweet must not fail a Spark task
            logger.exception("Could not tokenise a text of %d characters; returning no tokens", len(text))
            return []

    def _tokenize(self, text: str) -> list[str]:
        if "&" in text:
            text = _ENTITY_RE.sub(_unescape, text)
        text = text.lower()
        if "://" in text or "www." in text:
            text = _URL_RE.sub(f" {URL_TOKEN} ", text)
        if "@" in text:
            text = _MENTION_RE.sub(f" {MENTION_TOKEN} ", text)
        if not text.isascii():
            emoji = self._emoji
            text = self._emoji_re.sub(lambda m: emoji.get(m.group(), f" {EMOJI_TOKEN} "), text).translate(_APOSTROPHES)
        if self._keep_marks:
            text = _marks(text)
        memo = self._memo
        out: list[str] = []
        for token in _LOOSE_TOKEN_RE.findall(text):
            done = memo.get(token)
            if done is None:
                done = self._normalise(token)
                if len(memo) >= _MAX_MEMO:
                    memo.clear()
                memo[token] = done
            out.extend(done)
        return out

    def _normalise(self, token: str) -> tuple[str, ...]:
        """Output tokens for one loose token: squashing, contractions, numbers, stop words, lemmas."""
        if "_" in token:
            return tuple(t for part in _TOKEN_RE.findall(token) for t in self._normalise(part))
        token = _SQUASH_RE.sub(r"\1\1", token)
        if token in self._contractions:
            pieces: Sequence[str] = self._contractions[token]
        elif "'" in token:
            pieces = _split_apostrophes(token, self._contractions)
        else:
            pieces = (token,)
        out = []
        for piece in pieces:
            if piece.isdecimal():
                out.append(NUMBER_TOKEN)
                continue
            if piece in self._stop:
                continue
            lemma = self._lemmas.get(piece, piece)
            if lemma not in self._stop:
                out.append(lemma)
        return tuple(out)


_EMOTICON_POS_RE = re.compile(r"(?<![\w:/])(?:[:;=8]-?[)\]}d*p]|\(-?[:;=])(?!\w)")
_EMOTICON_NEG_RE = re.compile(r"(?<![\w:/])(?:[:;=]'?-?[(\[{/\\]|\)-?[:=])(?![\w/])")
_MARKS = ((re.compile(r"!+"), f" {EXCLAMATION_TOKEN} "), (re.compile(r"\?+"), f" {QUESTION_TOKEN} "))


def _marks(text: str) -> str:
    """Emoticons to the emoji tokens, runs of ``!`` and ``?`` to their tokens (the keep_marks variant)."""
    if ":" in text or ";" in text or "=" in text or "(" in text or ")" in text:
        text = _EMOTICON_POS_RE.sub(f" {POSITIVE_EMOJI_TOKEN} ", text)
        text = _EMOTICON_NEG_RE.sub(f" {NEGATIVE_EMOJI_TOKEN} ", text)
    for pattern, token in _MARKS:
        text = pattern.sub(token, text)
    return text


def _split_apostrophes(token: str, contractions: Mapping[str, tuple[str, ...]]) -> Sequence[str]:
    for clitic in _CLITICS:
        if token.endswith(clitic):
            token = token[: -len(clitic)]
            break
    if token in contractions:
        return contractions[token]
    if token.endswith("n't"):
        stem = token[:-3].replace("'", "")
        return (stem, "not") if stem else ("not",)
    return (token.replace("'", ""),)


def _parse_tsv(lines: Iterable[str], width: int) -> Iterable[list[str]]:
    for line in lines:
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != width:
            raise ValueError(f"Resource line {line!r} has {len(fields)} tab-separated fields, expected {width}.")
        yield fields


_DEFAULTS: dict[tuple[bool, bool], TextPreprocessor] = {}
_DEFAULT_LOCK = threading.Lock()


def default_preprocessor(keep_stop_words: bool = False, keep_marks: bool = False) -> TextPreprocessor:
    """The preprocessor built from the package's resources, loaded once per process (and per variant)."""
    key = (keep_stop_words, keep_marks)
    pre = _DEFAULTS.get(key)
    if pre is None:
        with _DEFAULT_LOCK:
            pre = _DEFAULTS.get(key)
            if pre is None:
                pre = _DEFAULTS[key] = TextPreprocessor.load(keep_stop_words=keep_stop_words, keep_marks=keep_marks)
    return pre


def tokenize(text: object) -> list[str]:
    """Tokens of one tweet text with the package's resources (see the module docstring)."""
    return default_preprocessor().tokenize(text)


# --- resource builder --------------------------------------------------------------------------


def _lemma_table() -> dict[str, str]:
    import spacy_lookups_data

    source = Path(spacy_lookups_data.__file__).resolve().parent / "data" / "en_lemma_lookup.json.gz"
    with gzip.open(source, "rt", encoding="utf-8") as fh:
        raw: dict[str, str] = json.load(fh)
    table: dict[str, str] = {}
    # Lowercase entries first, so "Aprils" -> "April" only fills the gap when "aprils" is absent.
    for word, lemma in sorted(raw.items(), key=lambda kv: (kv[0] != kv[0].lower(), kv[0])):
        key = word.lower()
        # Only plain words: tokens reach the lookup without apostrophes, hyphens or dots. Ordinals
        # keep their word ("first" -> "1" would turn "first class" into a number).
        if key not in table and _WORD_RE.fullmatch(key) and not lemma.isdecimal():
            table[key] = lemma.lower()
    table.update(LEMMA_OVERRIDES)
    return {word: lemma for word, lemma in sorted(table.items()) if word != lemma}


def _stop_words() -> list[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    words = {w.lower() for w in STOP_WORDS} - NEGATIONS - DOMAIN_KEEP
    # Clitics never reach the stop-word check as tokens of their own.
    words = {w for w in words if _WORD_RE.fullmatch(w)} | EXTRA_STOP_WORDS
    return sorted(words)


def _emoji_lines() -> list[str]:
    stray = [f"U+{ord(c):04X}" for c in POSITIVE_EMOJI + NEGATIVE_EMOJI if not any(a <= ord(c) <= b for a, b in EMOJI_RANGES)]
    if stray:
        raise ValueError(f"Emoji {stray} lie outside EMOJI_RANGES; widen the ranges or drop them.")
    lines = [f"{a:X}-{b:X}\t{EMOJI_TOKEN}" for a, b in EMOJI_RANGES]
    rows: dict[int, str] = {}
    for a, b in EMOJI_DROPPED:
        rows.update({code: "-" for code in range(a, b + 1)})
    rows.update({ord(c): POSITIVE_EMOJI_TOKEN for c in POSITIVE_EMOJI})
    rows.update({ord(c): NEGATIVE_EMOJI_TOKEN for c in NEGATIVE_EMOJI})
    return lines + [f"{code:X}\t{token}" for code, token in sorted(rows.items())]


_HEADER = "# Built by `python -m sparktweet.text build-resources`; do not edit. {what}\n"


def build_resources(out_dir: str | Path = RESOURCES_DIR) -> list[Path]:
    """Write the lemma, stop-word, emoji and contraction tables into ``out_dir``; returns the files.

    Reproducible: the same spaCy and spacy-lookups-data versions give the same file contents
    (the gzip header carries no name or time).
    """
    import spacy_lookups_data

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lemmas = _lemma_table()
    stop_words = _stop_words()
    clash = set(PLACEHOLDERS) & (set(stop_words) | set(lemmas))
    if clash:
        raise ValueError(f"Placeholder tokens {sorted(clash)} collide with a stop word or lemma entry.")

    text = _HEADER.format(what="word<TAB>lemma from spacy-lookups-data en_lemma_lookup (WordNet 3.0 licence).")
    text += "".join(f"{w}\t{lemma}\n" for w, lemma in lemmas.items())
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    (out / LEMMAS_FILE).write_bytes(buffer.getvalue())

    (out / STOPWORDS_FILE).write_text(
        _HEADER.format(what="spaCy English stop words minus negations and airline words, plus tweet noise.")
        + "".join(f"{w}\n" for w in stop_words),
        encoding="utf-8",
    )
    (out / EMOJI_FILE).write_text(
        _HEADER.format(what="code point or FIRST-LAST range<TAB>token; '-' drops the character.")
        + "".join(f"{line}\n" for line in _emoji_lines()),
        encoding="utf-8",
    )
    (out / CONTRACTIONS_FILE).write_text(
        _HEADER.format(what="token<TAB>space-separated expansion.")
        + "".join(f"{w}\t{x}\n" for w, x in sorted(CONTRACTIONS.items())),
        encoding="utf-8",
    )
    license_src = Path(spacy_lookups_data.__file__).resolve().parent / "data" / "en_license.txt"
    shutil.copyfile(license_src, out / LEMMAS_LICENSE_FILE)
    logger.info("Wrote %d lemmas and %d stop words to %s", len(lemmas), len(stop_words), out)
    return [out / name for name in RESOURCE_FILES]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sparktweet.text build-resources [--out DIR]`` or ``tokenize TEXT...``."""
    parser = argparse.ArgumentParser(prog="python -m sparktweet.text", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-resources", help="Rebuild the lemma/stop-word/emoji tables in sparktweet/resources.")
    build.add_argument("--out", default=str(RESOURCES_DIR), help="Output folder (default: the package's resources).")
    tok = sub.add_parser("tokenize", help="Print the tokens of each TEXT, one line each.")
    tok.add_argument("texts", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "build-resources":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        for path in build_resources(args.out):
            sys.stdout.write(f"{path}\n")
    else:
        for text in args.texts:
            sys.stdout.write(" ".join(tokenize(text)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
