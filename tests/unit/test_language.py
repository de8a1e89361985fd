"""The language detector on real-looking prompts: scripts, shared scripts, pasted code, instructions around quoted text."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from router_plugins import language
from router_plugins.language import LEAD_MAX_CHARS, LanguageDetector, detect_language, normalize

PROMPTS = [
    ("zh", "请帮我看看这段代码为什么报错：\n```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n\nprint(mean([]))\n```"),
    ("zh", "编写python函数sum_digits(num)，计算一个数的所有数字的和。"),
    ("zh", "把下面的英文翻译成中文：The quick brown fox jumps over the lazy dog, and everyone in the village saw it."),
    ("ja", "東京から大阪まで新幹線で行くと、どのくらい時間がかかりますか？"),
    ("ja", "次のPythonコードのバグを直してください。\n    for i in range(10):\n        print(i"),
    ("ko", "다음 함수에 대한 단위 테스트를 작성해 주세요. 경계 조건도 포함해 주세요."),
    ("zh", "韩国歌手김민재的新专辑什么时候发行？"),
    ("ru", "Напиши юнит-тесты на pytest для этой функции, включая граничные случаи."),
    ("ru", "Кратко перескажи этот текст: Министр заявил, что переговоры продолжатся на следующей неделе."),
    ("uk", "Що ти можеш порадити почитати українською мовою?"),
    ("ar", "ما هي عاصمة أستراليا؟ ولماذا لم تُختر سيدني؟"),
    ("fa", "موضوعات مورد علاقه تو چی هستن؟"),
    ("ur", "آپ سے مل کر خوشی ہوئی، کیا آپ میری مدد کر سکتے ہیں؟"),
    ("he", "איך אני מתקין את החבילה הזאת על לינוקס?"),
    ("hi", "मुझे एक ईमेल लिखने में मदद चाहिए जिसमें मैं छुट्टी के लिए आवेदन करूँ।"),
    ("th", "ช่วยอธิบายความแตกต่างระหว่าง TCP กับ UDP ให้หน่อยครับ"),
    ("ta", "இந்த கட்டுரையின் முக்கிய கருத்தை சுருக்கமாக எழுதுங்கள்."),
    ("el", "Μπορείς να μου εξηγήσεις πώς λειτουργεί η φωτοσύνθεση;"),
    ("de", "Kannst du mir erklären, wie ich in Python eine Datei Zeile für Zeile einlese?"),
    ("de", "Übersetze ins Deutsche: At least 384 people have died after an earthquake hit the island on Friday."),
    ("fr", "Quelle est la différence entre une liste et un tuple en Python ? Donne-moi un exemple."),
    ("es", "¿Me puedes escribir una receta de paella para cuatro personas, con ingredientes y pasos?"),
    ("pt", "Escreva um resumo deste artigo em três frases, por favor."),
    ("it", "Scrivi una poesia breve sull'autunno e sulle foglie che cadono."),
    ("en", "Write a function that returns the n-th Fibonacci number, and explain its complexity."),
    ("en", "Translate this into English: Neuer Krebsimpfstoff kann dem Immunsystem beibringen, Zellen zu sehen."),
    ("en", "Summarize the main point of this Russian text: Первый гол принес команде неожиданную победу."),
]


@pytest.mark.parametrize(("expected", "text"), PROMPTS, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(PROMPTS)])
def test_real_looking_prompts(expected: str, text: str) -> None:
    assert detect_language(text) == expected


@pytest.mark.parametrize("text", ["", "   \n\t ", "👍🎉🔥", "ok", "42 + 17 = ?", "!!!"])
def test_too_little_text_is_unknown(text: str) -> None:
    assert detect_language(text) == "und"


def test_code_only_has_no_language() -> None:
    assert detect_language("def add(a, b):\n    return a + b\n\nprint(add(1, 2))") == "und"
    assert detect_language("```\n[{\"Name\": \"libaom\", \"Description\": \"2-pass\"}]\n```") == "und"


def test_markdown_tables_and_blanks_are_prose() -> None:
    table = "| 电影名称 | 上映时间 | 主演 |\n| --- | --- | --- |\n| 网络谜踪 | 2018年 | 约翰·赵 |"
    assert detect_language(table) == "zh"
    assert detect_language("Complète la phrase :\nIl aime aller au _______ pour voir un film. A) bureau B) cinéma") == "fr"


def test_control_characters_and_lone_surrogates_do_not_stop_the_identifier() -> None:
    assert detect_language("\ud800Bonjour\x00 à tous, comment allez-vous aujourd'hui ? \ufdd0") == "fr"


def test_long_text_costs_no_more_than_its_start() -> None:
    seen: list[int] = []

    def identify(text: str) -> str:
        seen.append(len(text))
        return "en"

    detector = LanguageDetector(identify)
    huge = "Please review this log and tell me what went wrong. " + "word " * 400_000  # 2 MB
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        assert detector.detect(huge) == "en"
        timings.append(time.perf_counter() - started)
    assert max(seen) <= LEAD_MAX_CHARS
    assert min(timings) < 0.005, f"detection read far more than the start of the text: {min(timings) * 1000:.1f} ms"


def test_a_failing_identifier_gives_unknown_and_scripts_need_none() -> None:
    def broken(text: str) -> str:
        raise RuntimeError("identifier crashed")

    detector = LanguageDetector(broken)
    assert detector.detect("Hello there, how are you doing today?") == "und"
    assert detector.detect("สวัสดีครับ วันนี้อากาศดีไหม") == "th"


def test_an_answer_in_another_script_falls_back_to_the_scripts_language() -> None:
    # An identifier that reads Cyrillic text as Chinese is wrong about the script; Russian is the likelier answer.
    assert LanguageDetector(lambda text: "zh").detect("Привет, как у тебя дела сегодня?") == "ru"


def test_the_default_detector_is_built_once_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[int] = []
    real = language.load_cld2

    def counting() -> language.Identify:
        builds.append(1)
        time.sleep(0.05)  # widen the window in which a second thread could start another build
        return real()

    monkeypatch.setattr(language, "_default", None)
    monkeypatch.setattr(language, "load_cld2", counting)
    seen: list[language.LanguageDetector] = []
    threads = [threading.Thread(target=lambda: seen.append(language.default_detector())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len({id(d) for d in seen}) == 1


def test_without_pycld2_scripts_still_decide(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def missing() -> language.Identify:
        raise ImportError("language detection needs pycld2: pip install pycld2==0.42")

    monkeypatch.setattr(language, "_default", None)
    monkeypatch.setattr(language, "load_cld2", missing)
    with caplog.at_level(logging.WARNING, logger="router_plugins.language"):
        assert detect_language("日本語で答えてください。") == "ja"
        assert detect_language("Wie spät ist es jetzt in Berlin?") == "de", "function words still name it"
        assert detect_language("Tell me a joke about compilers.") == "en"
    assert "pycld2" in caplog.text


@pytest.mark.parametrize(
    ("label", "code"), [("zh-Hant", "zh"), ("iw", "he"), ("in", "id"), ("un", "und"), ("", "und"), ("EN", "en")]
)
def test_identifier_labels_are_normalized(label: str, code: str) -> None:
    assert normalize(label) == code
