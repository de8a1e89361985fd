"""Which natural language a prompt is written in, cheaply enough to run on every request.

Language is a routing signal, not a task: a maths question in Thai is still maths, but it should go to a model
that reads Thai. Chosen by measurement on 2,367 real prompts in 31 languages (bench/language_id.py,
docs/perf/language_id.json); three steps, about 0.05 ms:

1. Prose, not code: code fences, inline code, URLs and code-like lines are set aside, because a Chinese question
   with pasted Python is a Chinese question.
2. The instruction, not the quoted material: "Translate into English: <Russian text>" is an English request and
   "把下面的英文翻译成中文：<English text>" a Chinese one, so the language is read from the first sentence(s).
3. The Unicode script first, a statistical identifier second. Most scripts name their language outright (Hangul
   is Korean, kana Japanese, Thai Thai), and a character count is immune to what n-gram models get wrong on
   short text. For scripts that many languages share (Latin, Cyrillic, Devanagari), CLD2 decides (pycld2: C++,
   tables compiled in, ~0.02 ms a call, no model download, loaded once on first use); an answer in another script
   (code read as English, a name) leaves the script's most common language. CLD2 guesses poorly on a sentence or
   two, so on Latin script the commonest function words, and on Cyrillic the letters only Ukrainian or only
   Russian has, may overrule it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

UNKNOWN = "und"
MAX_CHARS = 600
"""Only the start of a prompt is read: the language is settled long before, and the cost stays bounded."""
MIN_LETTERS = 3
"""Fewer letters than this ("ok", "?!", an emoji) say nothing about a language."""
CJK_WEIGHT = 3
"""A Han, kana or Hangul character carries about as much text as three Latin letters (a syllable or a word)."""
LEAD_LETTERS = 12
"""The instruction's script is read from the first sentence(s) holding this many letters (CJK weighted)."""
IDENTIFY_LETTERS = 20
"""CLD2 reads the first sentences holding this many letters: fewer make it guess wildly ("Traduce al inglés" is
Occitan to it), more let the quoted material outvote the instruction."""
LEAD_MAX_CHARS = 200

Identify = Callable[[str], str]
"""A statistical identifier: text -> an ISO 639 code (any case, maybe with a region or script suffix)."""

# Scripts by 16-code-point block: every range below starts and ends on a block boundary.
_BLOCK_SCRIPTS: tuple[tuple[int, int, str], ...] = (
    (0x0041, 0x024F, "Latn"), (0x1E00, 0x1EFF, "Latn"),
    (0x0370, 0x03FF, "Grek"), (0x1F00, 0x1FFF, "Grek"),
    (0x0400, 0x052F, "Cyrl"),
    (0x0530, 0x058F, "Armn"),
    (0x0590, 0x05FF, "Hebr"),
    (0x0600, 0x06FF, "Arab"), (0x0750, 0x077F, "Arab"), (0xFB50, 0xFDFF, "Arab"), (0xFE70, 0xFEFF, "Arab"),
    (0x0900, 0x097F, "Deva"),
    (0x0980, 0x09FF, "Beng"),
    (0x0A00, 0x0A7F, "Guru"),
    (0x0A80, 0x0AFF, "Gujr"),
    (0x0B00, 0x0B7F, "Orya"),
    (0x0B80, 0x0BFF, "Taml"),
    (0x0C00, 0x0C7F, "Telu"),
    (0x0C80, 0x0CFF, "Knda"),
    (0x0D00, 0x0D7F, "Mlym"),
    (0x0D80, 0x0DFF, "Sinh"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x0E80, 0x0EFF, "Laoo"),
    (0x0F00, 0x0FFF, "Tibt"),
    (0x1000, 0x109F, "Mymr"),
    (0x10A0, 0x10FF, "Geor"),
    (0x1100, 0x11FF, "Hang"), (0x3130, 0x318F, "Hang"), (0xAC00, 0xD7AF, "Hang"),
    (0x1200, 0x137F, "Ethi"),
    (0x1780, 0x17FF, "Khmr"),
    (0x3040, 0x30FF, "Kana"), (0x31F0, 0x31FF, "Kana"), (0xFF60, 0xFF9F, "Kana"),
    (0x3400, 0x4DBF, "Hani"), (0x4E00, 0x9FFF, "Hani"), (0xF900, 0xFAFF, "Hani"), (0x20000, 0x3FFFF, "Hani"),
)  # fmt: skip
_SCRIPT_OF_BLOCK: dict[int, str] = {
    block: script for start, end, script in _BLOCK_SCRIPTS for block in range(start >> 4, (end >> 4) + 1)
}

_ONE_LANGUAGE = {
    "Grek": "el", "Armn": "hy", "Hebr": "he", "Beng": "bn", "Guru": "pa", "Gujr": "gu", "Orya": "or",
    "Taml": "ta", "Telu": "te", "Knda": "kn", "Mlym": "ml", "Sinh": "si", "Thai": "th", "Laoo": "lo",
    "Tibt": "bo", "Mymr": "my", "Geor": "ka", "Hang": "ko", "Ethi": "am", "Khmr": "km", "Hani": "zh", "Jpan": "ja",
}  # fmt: skip
"""Scripts that, in a prompt to an LLM, all but always mean one language."""


@dataclass(frozen=True)
class _SharedScript:
    default: str
    languages: frozenset[str] | None
    """Languages written in this script (None: any not written in another); an answer outside is a misreading."""

    def fits(self, language: str) -> bool:
        return language not in _NOT_LATIN if self.languages is None else language in self.languages


_SHARED = {
    "Latn": _SharedScript("en", None),
    "Cyrl": _SharedScript("ru", frozenset({"ru", "uk", "bg", "be", "sr", "mk", "kk", "ky", "mn", "tg", "tt", "ba"})),
    "Deva": _SharedScript("hi", frozenset({"hi", "mr", "ne", "sa"})),
}
_NOT_LATIN = frozenset(
    [*_ONE_LANGUAGE.values(), *(lang for s in _SHARED.values() for lang in s.languages or ()), "ar", "fa", "ur", "ps"]
)

# The most frequent function words of the Latin-script languages CLD2 most often misreads in a short sentence (as
# English, or as a small neighbour: Occitan for Spanish, Corsican for Italian, Afrikaans for Dutch). A word shared
# by several languages counts for each. They only check CLD2's answer: at least two of them, more than for any other
# language here and more than for CLD2's answer, overrule it.
_FUNCTION_WORDS = {
    lang: frozenset(words.split())
    for lang, words in {
        "en": "the of and to a in is you that it he was for on are as with his they i at be this have from or one "
        "had by but not what all were we when your can there an which she do how their if will me my please "
        "does should could would why where who",
        "fr": "de la le et les des en un du une que est pour qui dans par plus pas au sur ne se ce il sont avec je "
        "vous nous elle mais ou son sa quel quelle comment pourquoi où ça cette ces mon ma moi tu te",
        "es": "de la que el en y a los se del las un por con no una su para es al lo como más o pero sus le ha me "
        "si sin sobre este ya entre cuando todo esta ser son dos también fue qué cómo cuál dónde puedes esto "
        "mi tu yo está",
        "pt": "de a o que e do da em um para é com não uma os no se na por mais as dos como mas foi ao ele das tem "
        "à seu sua ou ser quando muito há nos já está eu também só pelo pela você quem qual isso este esta",
        "it": "di e il la che a per un in è non una sono mi si da con del della le lo gli ma come cosa ho ha hai ti "
        "sei questo questa quale perché dove anche al alla più nel",
        "de": "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an werden "
        "aus er hat dass sie nach wird bei einer um am sind noch wie einem über einen so zum war haben nur "
        "oder aber vor zur bis mehr durch man ich du was wer warum wo bitte kannst mir mich",
        "nl": "de van een het en in is dat op te zijn voor met die niet aan er om ook als bij of door maar dan nog "
        "naar wat hoe ik je jij kun kan waar waarom wie",
        "id": "yang dan di ini itu dengan untuk dari dalam tidak akan pada juga ke ada saya anda kamu aku apa bisa "
        "adalah bagaimana mengapa siapa berapa tolong",
        "tr": "bir ve bu da de için ile ne çok daha gibi olan ben sen var yok nasıl nedir mi mı mu mü ama en kadar",
    }.items()
}
_WORD = re.compile(r"[^\W\d_]+")

# Letters some alphabets add tell their languages apart more surely than n-grams on short text.
_UKRAINIAN_LETTERS = frozenset("їєґЇЄҐ")
_RUSSIAN_LETTERS = frozenset("ыэъёЫЭЪЁ")
"""Russian (and Belarusian, which adds ў) letters that Serbian, Macedonian, Bulgarian and Ukrainian lack."""
_URDU_LETTERS = frozenset("ٹڈڑںےۓہھ")
_PERSIAN_LETTERS = frozenset("پچژگکی")

_FENCED = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)", re.DOTALL)
_INLINE = re.compile(r"`[^`\n]*`|https?://\S+|www\.\S+")
_CODE_CHARS = re.compile(r"[{}\[\]()<>=;\\$#]|[^\W_]_[^\W_]")
"""Brackets, operators and snake_case; not `|` (Markdown tables) nor a run of `_` (a blank to fill in)."""
_CODE_START = re.compile(
    r"(def|class|import|from \S+ import|return|function|const|let|var|public|private|package|fn|func|#include"
    r"|SELECT|INSERT|CREATE|UPDATE)\b"
)
_NOT_LETTER = re.compile(r"[\W\d_]+")
_CJK = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_SENTENCE_END = re.compile(r"[:：?？。!！\n]|[.;](?=\s)")
_NOT_CLD2_TEXT = re.compile(
    "[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufdcf\ufdf0-\ufffd"
    "\U00010000-\U0001fffd\U00020000-\U0002fffd\U00030000-\U0003fffd]"
)
"""What CLD2 rejects as invalid UTF-8 (controls, surrogates, noncharacters, unassigned planes); no language in it."""


def _is_code_line(line: str) -> bool:
    """Indented, opened by a keyword of code, or dense in the punctuation of code."""
    if line.startswith(("    ", "\t")) or _CODE_START.match(line):
        return True
    symbols = len(_CODE_CHARS.findall(line))
    return symbols >= 3 and symbols >= 0.08 * len(line.strip())


def _letters(text: str) -> int:
    return len(_NOT_LETTER.sub("", text)) + (CJK_WEIGHT - 1) * len(_CJK.findall(text))


def prose(text: str) -> str:
    """The natural-language part of the start of `text`: code blocks, inline code, URLs and code lines dropped.

    A prompt that is only code has none, and so no language ("und"): its identifiers would be read as anything
    from English to Wolof.
    """
    kept = _INLINE.sub(" ", _FENCED.sub("\n", text[:MAX_CHARS]))
    if "\n" in kept:
        kept = "\n".join(line for line in kept.splitlines() if not _is_code_line(line))
    return kept


def lead(text: str, letters: int = LEAD_LETTERS) -> str:
    """The first sentence(s) of `text` that hold at least `letters` letters (CJK weighted), at most LEAD_MAX_CHARS."""
    start = seen = 0
    for end in _SENTENCE_END.finditer(text, 0, LEAD_MAX_CHARS):
        seen += _letters(text[start : end.end()])
        start = end.end()
        if seen >= letters:
            return text[:start]
    return text[:LEAD_MAX_CHARS]


def script_counts(text: str) -> dict[str, int]:
    """Letters per Unicode script (ISO 15924 codes); letters of scripts not listed here are not counted."""
    letters = _NOT_LETTER.sub("", text)
    if letters.isascii():
        return {"Latn": len(letters)} if letters else {}
    counts: dict[str, int] = {}
    blocks = _SCRIPT_OF_BLOCK
    for ch in letters:
        script = blocks.get(ord(ch) >> 4)
        if script is not None:
            counts[script] = counts.get(script, 0) + 1
    return counts


def _weighted(counts: dict[str, int]) -> dict[str, int]:
    """Per script, its weight in the text; Han goes to Japanese when kana stands beside it, else to Chinese."""
    weights = {script: n for script, n in counts.items() if script not in ("Hani", "Kana", "Hang")}
    han, kana, hangul = counts.get("Hani", 0), counts.get("Kana", 0), counts.get("Hang", 0)
    if hangul:
        weights["Hang"] = hangul * CJK_WEIGHT
    if han or kana:
        # Japanese writes kana between its kanji, about a third of its text; Chinese has none.
        weights["Jpan" if kana * 10 >= han + kana else "Hani"] = (han + kana) * CJK_WEIGHT
    return weights


def _by_function_words(text: str, guess: str) -> str:
    """`guess`, unless the function words of `text` clearly say another language."""
    votes = dict.fromkeys(_FUNCTION_WORDS, 0)
    for word in set(_WORD.findall(text.lower())):  # distinct words: "ya ... ya ... ya" in Swahili is one hint
        for lang, words in _FUNCTION_WORDS.items():
            if word in words:
                votes[lang] += 1
    ranked = sorted(votes, key=votes.__getitem__, reverse=True)
    best, runner_up = votes[ranked[0]], votes[ranked[1]]
    if best >= 2 and best > runner_up and best > votes.get(guess, 0):
        return ranked[0]
    return guess


def _by_cyrillic_letters(text: str, guess: str) -> str:
    """`guess`, unless the letters of `text` rule it out (CLD2 reads short Russian as Serbian, say)."""
    letters = set(text)
    if letters & _UKRAINIAN_LETTERS:
        return "uk"
    if guess not in ("ru", "be") and letters & _RUSSIAN_LETTERS:
        return "be" if "ў" in letters else "ru"
    return guess


def _arabic_script_language(text: str) -> str:
    letters = set(text)
    if letters & _URDU_LETTERS:
        return "ur"
    if letters & _PERSIAN_LETTERS:
        return "fa"
    return "ar"


_ALIASES = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "un": UNKNOWN, "xxx": UNKNOWN, "zxx": UNKNOWN}


def normalize(code: str) -> str:
    """An identifier's label as a bare ISO 639 code: `zh-Hant` -> `zh`, CLD's old `iw` -> `he`, unknown -> `und`."""
    base = code.replace("_", "-").split("-", 1)[0].lower()
    return _ALIASES.get(base, base) if base.isalpha() and 2 <= len(base) <= 3 else UNKNOWN


class LanguageDetector:
    """Script rules first, then `identify` for the scripts that many languages share. Never raises."""

    def __init__(self, identify: Identify) -> None:
        self._identify = identify

    def detect(self, text: str) -> str:
        """An ISO 639-1 code (639-3 where a language has none), or "und" when the text says too little."""
        try:
            return self._detect(text)
        except Exception:  # noqa: BLE001 - a language guess must never fail a request
            log.debug("language detection failed", exc_info=True)
            return UNKNOWN

    def _detect(self, text: str) -> str:
        body = prose(text)
        instruction = lead(body)
        weights = _weighted(script_counts(instruction))
        if not weights or sum(weights.values()) < MIN_LETTERS:
            return UNKNOWN
        script = max(weights, key=weights.__getitem__)
        if script in _ONE_LANGUAGE:
            return _ONE_LANGUAGE[script]
        if script == "Arab":
            return _arabic_script_language(instruction)
        shared = _SHARED.get(script)
        if shared is None:
            return UNKNOWN
        sample = lead(body, IDENTIFY_LETTERS)
        guess = normalize(self._identify(sample))
        if not shared.fits(guess):
            guess = UNKNOWN
        if script == "Latn":
            guess = _by_function_words(sample, guess)
        elif script == "Cyrl":
            guess = _by_cyrillic_letters(sample, guess)
        return shared.default if guess == UNKNOWN else guess


def load_cld2() -> Identify:
    """CLD2 as an `Identify`; raises ImportError naming the package when pycld2 is not installed."""
    try:
        import pycld2  # noqa: PLC0415 - a C extension loaded when the first prompt needs it, not with the package
    except ImportError as exc:
        raise ImportError("language detection needs pycld2: pip install pycld2==0.42") from exc
    detect = pycld2.detect

    def identify(text: str) -> str:
        # bestEffort: answer for a few words too, where CLD2 would otherwise say unknown.
        _reliable, _bytes, details = detect(_NOT_CLD2_TEXT.sub(" ", text), isPlainText=True, bestEffort=True)
        return str(details[0][1])

    return identify


_default: LanguageDetector | None = None
_default_lock = threading.Lock()


def default_detector() -> LanguageDetector:
    """The process-wide detector, built once on first use, under a lock."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                try:
                    identify = load_cld2()
                except ImportError as exc:
                    # Scripts still name most non-Latin languages; Latin, Cyrillic and Devanagari get their default.
                    log.warning("%s; detecting languages by script only", exc)
                    identify = _no_identifier
                _default = LanguageDetector(identify)
    return _default


def _no_identifier(_text: str) -> str:
    return UNKNOWN


def detect_language(text: str) -> str:
    """The language of `text` as an ISO 639-1 code, or "und"; never raises."""
    try:
        return default_detector().detect(text)
    except Exception:  # noqa: BLE001 - a language guess must never fail a request
        return UNKNOWN


__all__ = ["UNKNOWN", "LanguageDetector", "default_detector", "detect_language", "load_cld2", "normalize"]
