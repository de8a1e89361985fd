"""The translation rule: `translation` only when the prompt asks for a translation, whatever its language."""

from __future__ import annotations

import pytest

from router_plugins.classify.text_model import TextModelLayer
from router_plugins.classify.text_model_fit import fit_text_model
from router_plugins.classify.translation import asks_for_translation

REQUESTS = [
    "Translate this into English: Der Zug hatte zwei Stunden Verspätung.",
    "请把这段话翻译成英文：今天的会议推迟到下午三点。",
    "次の文を英語に翻訳してください：明日は雨が降るでしょう。",
    "다음 문장을 영어로 번역해 주세요: 오늘은 날씨가 좋네요.",
    "Переведи на английский: Поезд опоздал на два часа.",
    "Как это будет по-английски? «Мы скоро вернёмся»",
    "¿Cómo se dice esto en inglés? Llegamos tarde otra vez.",
    "Traduis ce texte en anglais : Nous arrivons demain matin.",
    "Übersetze bitte ins Englische: Wir kommen morgen früh an.",
    "Bu cümleyi İngilizceye çevirir misin? Yarın sabah geliyoruz.",
    "Dịch sang tiếng Anh: Chúng tôi sẽ đến vào sáng mai.",
    "इसका अंग्रेज़ी में अनुवाद कीजिए: हम कल सुबह पहुंचेंगे।",
    "how do you say 'see you tomorrow' in Japanese",
    "英語にするとどうなりますか？「また明日」",
]
NOT_REQUESTS = [
    "Напиши стихотворение о первом снеге в Москве.",
    "Scrivi una funzione in JavaScript che inverte una stringa.",
    "Schreib mir ein kurzes Gedicht über den Herbst.",
    "Bana İstanbul'da üç günlük bir gezi planı hazırla.",
    "用Python写一个快速排序。",
    "今日はとても疲れました。何かおすすめの映画はありますか？",
    "Quelle est la capitale de l'Australie ?",
    "¿Cuánto es 17 por 23?",
]


@pytest.mark.parametrize("text", REQUESTS)
def test_requests_to_translate_are_recognised_in_many_languages(text: str) -> None:
    assert asks_for_translation(text)


@pytest.mark.parametrize("text", NOT_REQUESTS)
def test_foreign_text_alone_is_no_request_to_translate(text: str) -> None:
    assert not asks_for_translation(text)


def test_the_layer_vetoes_translation_without_a_request_and_keeps_the_next_task() -> None:
    # A model that learnt "foreign text -> translation", as one trained on few non-English prompts does.
    texts = ["Übersetze: Guten Morgen", "Переведи: доброе утро", "Traduis : bonjour", "Translate: hola amigos",
             "write a poem about autumn", "write a short story about a cat", "compose a haiku about rain"] * 3
    labels = ["translation"] * 4 + ["writing"] * 3
    labels *= 3
    model = fit_text_model(texts, labels, ["translation", "writing"])
    layer = TextModelLayer(model)

    poem = layer.classify("Schreib mir ein Gedicht: Guten Morgen, doброе утро")
    request = layer.classify("Übersetze: Guten Morgen, доброе утро")

    assert model.tasks[int(model.probabilities(["Schreib mir ein Gedicht: Guten Morgen, doброе утро"])[0].argmax())] \
        == "translation", "the model alone says translation"
    assert poem.task == "writing" and "translation vetoed" in poem.detail and poem.confidence == pytest.approx(1.0)
    assert request.task == "translation" and "vetoed" not in request.detail
