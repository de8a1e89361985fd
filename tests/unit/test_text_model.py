"""Layer 2, the text model: n-grams as scikit-learn makes them, fitting, calibration, the file, and the shipped fit.

A small synthetic multilingual set (four tasks, ten prompts each, in six languages) is fitted once per module
(~0.2 s); the shipped model is loaded once (~0.4 s).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from router_plugins.classify import FALLBACK_LAYER, build_classifier
from router_plugins.classify.assembly import ClassifierSources
from router_plugins.classify.scoring import softmax
from router_plugins.classify.text_model import (
    ARTIFACT_FILE,
    SHIPPED_FILE,
    TEXT_MODEL_VERSION,
    TOKEN_PATTERN,
    TextModel,
    TextModelLayer,
    char_wb_ngrams,
    load_text_model,
    view,
    word_ngrams,
)
from router_plugins.classify.text_model_fit import TextModelTraining, fit_temperature, fit_text_model
from router_plugins.datadir import ArtifactVersionError, DamagedArtifact, quarantined
from router_plugins.registry import parse_registry

TRAIN = {
    "coding": [
        "Write a Python function that reverses a linked list.",
        "write a function in javascript that removes duplicates from an array",
        "Schreibe eine Python-Funktion, die prüft, ob eine Zahl eine Primzahl ist.",
        "Escribe una función en Python que cuente las vocales de una cadena.",
        "Напиши функцию на Python, которая сортирует список словарей по ключу.",
        "用Python写一个函数，读取CSV文件并返回每一列的平均值。",
        "Implement a function in Go that merges two sorted slices.",
        "write a bash script that backs up my home folder every night",
        "Écris une fonction JavaScript qui formate une date en JJ/MM/AAAA.",
        "Create a SQL query that returns the ten newest orders with the customer name.",
    ],
    "translation": [
        "Translate into English: Ich komme morgen etwas später ins Büro.",
        "Translate this sentence to Spanish: Where is the train station?",
        "Переведи на английский: Мы встретимся в кафе в пять часов.",
        "请把这句话翻译成英文：今天的会议推迟到下午三点。",
        "Traduce al inglés: Mi hermano vive en Barcelona desde hace diez años.",
        "Übersetze ins Englische: Das Wetter ist heute wunderschön.",
        "Translate to French: I would like to book a room for two nights.",
        "Traduis en anglais : Le magasin ferme à dix-neuf heures le samedi.",
        "translate to german please: the invoice is attached to this email",
        "Переведи на немецкий: Спасибо за помощь, это было очень полезно.",
    ],
    "math": [
        "Solve for x: 3x + 7 = 22.",
        "What is the derivative of x^3 * sin(x)?",
        "Löse die Gleichung 2x - 5 = 11 nach x auf.",
        "Calcula la integral de 1/x entre 1 y e.",
        "Реши уравнение x^2 - 5x + 6 = 0.",
        "求解方程 x^2 + 2x - 8 = 0 的根。",
        "A train travels 180 km in 2.5 hours. What is its average speed?",
        "Compute the sum of the first 100 positive integers.",
        "Résous l'équation 4x + 3 = 19.",
        "solve the system of equations x + y = 10 and x - y = 2",
    ],
    "chat": [
        "Hi! How are you doing today?",
        "hello there, just wanted to say thanks for yesterday",
        "Hallo, wie geht es dir? Erzähl mir etwas über deinen Tag.",
        "¡Hola! ¿Qué tal estás? Cuéntame algo divertido.",
        "Привет! Как дела? Давай просто поболтаем.",
        "你好！今天过得怎么样？我们聊聊天吧。",
        "Good morning! I'm bored, let's just chat for a bit.",
        "Salut ! Ça va ? On discute un peu ?",
        "hey, how's your day going?",
        "Hi again, nice to talk to you. How have you been?",
    ],
}
TASKS = tuple(TRAIN)
TEXTS = [text for texts in TRAIN.values() for text in texts]
LABELS = [task for task, texts in TRAIN.items() for _ in texts]
PARAPHRASES = [
    ("Write a Python function that returns the largest element of a list.", "coding"),
    ("Escribe una función en JavaScript que invierta una cadena.", "coding"),
    ("Translate into English: Wir fahren nächste Woche in den Urlaub.", "translation"),
    ("Переведи на английский: Я забыл ключи дома.", "translation"),
    ("Solve for x: 5x - 4 = 21.", "math"),
    ("Реши уравнение 3x + 9 = 0.", "math"),
    ("Hello! How are you doing this evening?", "chat"),
    ("¡Hola! ¿Qué tal tu día?", "chat"),
]
LONG = "Fix this:\n" + "def f(x):\n    return x  # TODO\n" * 60 + "\nTraceback: ValueError: bad value in f"
"""Longer than the focused head + tail: exercises `focus` and the head/tail views."""
ANALYZER_TEXTS = [
    "",
    "   \t\n ",
    "a",
    "I am a b c d",
    "Hello,   World!!  Tabs\tand\nnewlines\r\n  and   runs   of   spaces",
    "写一个Python函数，计算斐波那契数列。",
    "日本語のテキスト：東京は日本の首都です。",
    "Привет, мир! Ёжик в тумане.",
    "İstanbul ĞÜŞ straße ǅemal",  # lowercasing changes the length of İ
    "emoji 🚀🔥 mixed👍text and 👨‍👩‍👧 family",
    "def f(x):\n    return x**2 + 1  # square_plus_one\nprint(f(3)) == 10",
    "x_1 = a-b/c; y=[1,2,3]; z = {'k': \"v\"}",
    "naïve café coöperate résumé",
    "اللغة العربية جميلة جدا",
    "한국어 문장 입니다 ok",
    "supercalifragilisticexpialidocious",
    LONG,
]


@pytest.fixture(scope="module")
def model() -> TextModel:
    return fit_text_model(TEXTS, LABELS, TASKS)


@pytest.fixture(scope="module")
def shipped() -> TextModel:
    return TextModel.load(SHIPPED_FILE)


def log_loss(margins: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    p = softmax(margins, temperature)
    return float(-np.mean(np.log(p[np.arange(len(targets)), targets])))


# n-grams


@pytest.mark.parametrize("text", ANALYZER_TEXTS)
@pytest.mark.parametrize("ngram", [(1, 4), (2, 3), (3, 5)])
def test_char_wb_ngrams_are_scikit_learns(text: str, ngram: tuple[int, int]) -> None:
    from sklearn.feature_extraction.text import CountVectorizer

    expected = CountVectorizer(analyzer="char_wb", ngram_range=ngram).build_analyzer()(text)

    assert Counter(char_wb_ngrams(text, *ngram)) == Counter(expected)


@pytest.mark.parametrize("text", ANALYZER_TEXTS)
@pytest.mark.parametrize("ngram", [(1, 2), (1, 1), (2, 3)])
def test_word_ngrams_are_scikit_learns(text: str, ngram: tuple[int, int]) -> None:
    from sklearn.feature_extraction.text import CountVectorizer

    analyzer = CountVectorizer(analyzer="word", ngram_range=ngram, token_pattern=TOKEN_PATTERN).build_analyzer()

    assert Counter(word_ngrams(text, *ngram)) == Counter(analyzer(text))


def test_features_are_scikit_learns_tfidf_per_block_times_its_weight() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    fitted = fit_text_model(TEXTS, LABELS, TASKS, training=TextModelTraining(edge_weight=0.5))
    queries = [*TEXTS[::7], *(t for t, _ in PARAPHRASES), LONG, "zzzz qqqq", ""]
    x = fitted.features(queries).toarray()
    offset = 0
    assert [(b.view, b.analyzer, b.weight) for b in fitted.blocks] == [
        ("all", "char_wb", 1.0), ("all", "word", 1.0), ("head", "char_wb", 0.5), ("head", "word", 0.5),
        ("tail", "char_wb", 0.5), ("tail", "word", 0.5),
    ]  # fmt: skip
    for block in fitted.blocks:
        pattern = TOKEN_PATTERN if block.analyzer == "word" else None
        reference = TfidfVectorizer(analyzer=block.analyzer, ngram_range=block.ngram, sublinear_tf=True,
                                    token_pattern=pattern, min_df=2, dtype=np.float32)  # fmt: skip
        reference.fit([view(t, block.view) for t in TEXTS])
        vocabulary = tuple(sorted(reference.vocabulary_, key=reference.vocabulary_.__getitem__))
        expected = reference.transform([view(t, block.view) for t in queries]).toarray() * block.weight

        assert block.vocabulary == vocabulary
        np.testing.assert_allclose(block.idf, reference.idf_, rtol=1e-6)
        np.testing.assert_allclose(x[:, offset : offset + len(vocabulary)], expected, atol=1e-6)
        offset += len(vocabulary)
    assert not x[-1].any(), "an empty text has no features"


# fitting


def test_predicts_held_out_paraphrases_in_several_languages(model: TextModel) -> None:
    predicted = model.probabilities([t for t, _ in PARAPHRASES]).argmax(axis=1)

    assert [model.tasks[i] for i in predicted] == [task for _, task in PARAPHRASES]


def test_batch_margins_equal_single_text_margins(model: TextModel) -> None:
    texts = [*(t for t, _ in PARAPHRASES), LONG, "", "unseen zzzz"]
    batch = model.margins(texts)
    single = np.vstack([model.margins([t]) for t in texts])

    assert batch.shape == (len(texts), len(TASKS))
    np.testing.assert_allclose(single, batch, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.margins([""])[0], model.bias)  # no n-gram: the bias alone


def test_tasks_without_examples_are_never_chosen_and_unknown_labels_are_refused() -> None:
    fitted = fit_text_model(TEXTS[:20], LABELS[:20], ("coding", "math", "translation", "extra"))

    probabilities = fitted.probabilities([t for t, _ in PARAPHRASES])
    assert probabilities[:, [1, 3]].max() < 1e-6
    chosen = [fitted.tasks[i] for i in probabilities.argmax(axis=1)[:4]]
    assert chosen == ["coding", "coding", "translation", "translation"]
    with pytest.raises(ValueError, match="labels not among the tasks: chat"):
        fit_text_model(TEXTS, LABELS, ("coding", "math", "translation"))


def test_two_tasks_fit_as_one_margin_for_each_side() -> None:
    fitted = fit_text_model(TEXTS[:20], LABELS[:20], ("coding", "translation"))

    margins = fitted.margins([PARAPHRASES[0][0], PARAPHRASES[2][0]])
    np.testing.assert_allclose(margins[:, 0], -margins[:, 1])
    assert list(margins.argmax(axis=1)) == [0, 1]


def test_layer_confidence_is_the_top_probability_and_empty_text_has_no_task(model: TextModel) -> None:
    layer = TextModelLayer(model)
    verdict = layer.classify(PARAPHRASES[4][0])

    assert verdict.task == "math"
    assert verdict.confidence == pytest.approx(model.probabilities([PARAPHRASES[4][0]])[0].max())
    assert verdict.detail.startswith("math=")
    assert layer.classify("  \n").task is None and layer.classify("").confidence == 0.0


# the file


def test_save_then_load_gives_the_same_model(model: TextModel, tmp_path: Path) -> None:
    path = model.save(tmp_path / "sub" / "m.npz")
    loaded = TextModel.load(path)
    texts = [*(t for t, _ in PARAPHRASES), *TEXTS, LONG]

    assert loaded.tasks == model.tasks and loaded.temperature == model.temperature
    assert loaded.fingerprint == model.fingerprint and dict(loaded.meta) == dict(model.meta)
    assert [(b.view, b.analyzer, b.ngram, b.vocabulary, b.weight) for b in loaded.blocks] == [
        (b.view, b.analyzer, b.ngram, b.vocabulary, b.weight) for b in model.blocks
    ]
    # Weights are stored as float16: the probabilities agree closely, the choices exactly.
    np.testing.assert_allclose(loaded.probabilities(texts), model.probabilities(texts), atol=1e-3)
    assert list(loaded.probabilities(texts).argmax(1)) == list(model.probabilities(texts).argmax(1))
    again = TextModel.load(loaded.save(tmp_path / "again.npz"))
    assert np.array_equal(again.probabilities(texts), loaded.probabilities(texts)), "a loaded model saves losslessly"
    assert not list(tmp_path.rglob("*.tmp")), "the temporary file was renamed into place"


def test_other_versions_and_damaged_files_raise_value_error(model: TextModel, tmp_path: Path) -> None:
    with np.load(model.save(tmp_path / "m.npz")) as data:
        arrays = {key: data[key] for key in data.files}
    np.savez(tmp_path / "old.npz", **(arrays | {"version": np.array("text-model-v0")}))
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in arrays.items() if k != "weights"})
    np.savez(tmp_path / "shape.npz", **(arrays | {"bias": np.zeros(len(TASKS) + 1)}))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_bytes(b"this is not a model")
    whole = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))

    for name in ("partial", "shape", "empty", "text", "missing", "truncated", "flipped"):
        with pytest.raises(DamagedArtifact, match="not a usable text model"):
            TextModel.load(tmp_path / f"{name}.npz")
    # Another version is not damage: it is left in place for the release that reads it.
    with pytest.raises(ArtifactVersionError, match=f"text-model-v0, expected {TEXT_MODEL_VERSION}"):
        TextModel.load(tmp_path / "old.npz")


def test_a_damaged_artifact_falls_back_to_the_shipped_model(
    model: TextModel, shipped: TextModel, tmp_path: Path
) -> None:
    assert load_text_model(None).fingerprint == shipped.fingerprint  # type: ignore[union-attr]
    assert load_text_model(tmp_path).fingerprint == shipped.fingerprint  # type: ignore[union-attr]
    model.save(tmp_path / ARTIFACT_FILE)
    assert load_text_model(tmp_path).tasks == TASKS  # type: ignore[union-attr]

    (tmp_path / ARTIFACT_FILE).write_bytes(b"damaged")

    assert load_text_model(tmp_path).fingerprint == shipped.fingerprint  # type: ignore[union-attr]
    assert ClassifierSources(tmp_path).text_model().fingerprint == shipped.fingerprint  # type: ignore[union-attr]
    assert (tmp_path / f"{ARTIFACT_FILE}.corrupt").read_bytes() == b"damaged", "moved aside, not deleted"
    assert not (tmp_path / ARTIFACT_FILE).exists()
    assert any(q["file"] == str(tmp_path / ARTIFACT_FILE) for q in quarantined()), "reported for readiness"


def test_sources_pick_up_a_rewritten_artifact_without_being_recreated(
    model: TextModel, shipped: TextModel, tmp_path: Path
) -> None:
    sources = ClassifierSources(tmp_path)
    assert sources.text_model().fingerprint == shipped.fingerprint  # type: ignore[union-attr]
    model.save(tmp_path / ARTIFACT_FILE)

    first = sources.text_model()
    assert first is not None and first.fingerprint == model.fingerprint and sources.text_model() is first
    retrained = fit_text_model(TEXTS[:30], LABELS[:30], TASKS)  # no chat prompts: another model
    retrained.save(tmp_path / ARTIFACT_FILE)

    second = sources.text_model()
    assert second is not None and second.fingerprint == retrained.fingerprint != first.fingerprint
    assert second.probabilities([PARAPHRASES[6][0]])[0][TASKS.index("chat")] < 1e-6
    (tmp_path / ARTIFACT_FILE).write_text("damaged while serving")
    assert sources.text_model().fingerprint == shipped.fingerprint  # type: ignore[union-attr]
    assert not (tmp_path / ARTIFACT_FILE).exists(), "the damaged file was moved aside"
    assert sources.text_model().fingerprint == shipped.fingerprint  # type: ignore[union-attr]


# calibration and abstention


def test_fit_temperature_minimises_the_log_loss() -> None:
    rng = np.random.default_rng(0)
    margins = rng.normal(size=(3000, 5)) * 3
    truth = softmax(margins, 1.6)
    targets = np.array([rng.choice(5, p=row) for row in truth])

    fitted = fit_temperature(margins, targets)

    assert fitted == pytest.approx(1.6, rel=0.15)
    best = log_loss(margins, targets, fitted)
    assert all(best <= log_loss(margins, targets, t) for t in (1.0, fitted * 2, fitted / 2, fitted * 1.1, fitted / 1.1))


def test_fit_temperature_sharpens_margins_that_are_always_right() -> None:
    margins = np.random.default_rng(1).normal(size=(200, 4))
    targets = margins.argmax(axis=1)

    fitted = fit_temperature(margins, targets)

    assert fitted < 0.05
    assert log_loss(margins, targets, fitted) < log_loss(margins, targets, 1.0) / 10


def test_the_shipped_models_confidences_are_probabilities(shipped: TextModel) -> None:
    import json

    fixture = Path(__file__).parents[1] / "fixtures" / "classifier" / "served_prompts.jsonl"
    texts = [json.loads(line)["text"] for line in fixture.read_text(encoding="utf-8").splitlines() if line.strip()]
    probabilities = shipped.probabilities(texts)

    assert len(shipped.tasks) == 14 and 0 < shipped.temperature < 5
    assert probabilities.shape == (len(texts), 14) and (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(probabilities, softmax(shipped.margins(texts), shipped.temperature))
    layer = TextModelLayer(shipped)
    verdicts = [layer.classify(t) for t in texts]
    kept = [i for i, v in enumerate(verdicts) if "translation vetoed" not in v.detail]  # the rule renormalises
    assert kept, "most fixture prompts are not vetoed"
    np.testing.assert_allclose([verdicts[i].confidence for i in kept], probabilities.max(axis=1)[kept], rtol=1e-5)


def test_the_cascade_abstains_when_the_text_model_is_not_sure_enough(shipped: TextModel) -> None:
    registry = parse_registry(
        "models:\n  - {name: m, litellm_params: {model: openai/m}}\n"
        "router: {fallback_task: chat, classifier: {keywords: {enabled: false}, text_model: {threshold: 0.99}}}\n"
    )
    classifier = build_classifier(registry, None, text_model=shipped)

    vague = classifier.classify("hmm, what about the other one?")
    clear = classifier.classify("Translate to German: The meeting has been moved to Thursday afternoon.")

    assert classifier.layer_names == ("text_model",)
    assert vague.task == "chat" and vague.layer == FALLBACK_LAYER and vague.needs_clarification
    attempt = vague.attempts[0]
    assert attempt.layer == "text_model" and attempt.task is not None and not attempt.accepted
    assert 0 < attempt.confidence < 0.99 and attempt.threshold == 0.99
    assert clear.task == "translation" and clear.layer == "text_model" and not clear.needs_clarification


# the translation rule on the shipped model: a prompt in another language is not a translation request

NOT_TRANSLATION = [
    "Напиши, пожалуйста, стихотворение о зимнем лесе и первом снеге.",
    "如何在Python中用字典统计一个列表里每个单词出现的次数？请给出代码。",
    "りんごが3個入った袋が5袋あります。そのうち4個食べました。残りは何個ですか？",
    "Hallo! Wie geht es dir heute? Ich wollte einfach mal ein bisschen plaudern.",
    "Peux-tu résumer ce texte en trois phrases ? « La réunion du conseil municipal a duré quatre heures. Les élus "
    "ont voté le budget 2024, qui prévoit une hausse des dépenses pour les écoles et une baisse pour la voirie. "
    "L'opposition a dénoncé un manque de transparence. »",
    "¿Cuál es la capital de Australia y por qué no es Sídney?",
    "이 코드를 실행하면 에러가 납니다. 왜 그런가요?\nTraceback (most recent call last):\n  File \"main.py\", line 3, "
    "in <module>\n    print(items[5])\nIndexError: list index out of range",
    "Scrivi una funzione in JavaScript che controlla se una stringa è palindroma.",
    "Bana İstanbul'da üç günlük bir gezi planı hazırlar mısın?",
    "Escreva um e-mail formal para o meu chefe pedindo folga na próxima sexta-feira.",
]
TRANSLATION = [
    "Translate into English: Ich habe heute keine Zeit, weil ich arbeiten muss.",
    "Переведи на английский: «Завтра будет дождь, возьми зонт».",
    "请把这句话翻译成英文：我明天要去北京出差。",
    "Traduce al francés: Me gustaría reservar una mesa para dos personas.",
    "この文を英語に翻訳してください：今日はとても暑いです。",
    "Übersetze bitte ins Spanische: Wo ist der nächste Bahnhof?",
    "Translate to German: The meeting has been moved to Thursday afternoon.",
    "Traduis en anglais : Je voudrais un café et un croissant, s'il vous plaît.",
]


def test_prompts_in_other_languages_are_not_taken_for_translation_requests(shipped: TextModel) -> None:
    layer = TextModelLayer(shipped)
    taken = [text[:40] for text in NOT_TRANSLATION if layer.classify(text).task == "translation"]

    # Measured: 2 of 10 taken for translation (the Italian coding and the Turkish planning request).
    assert len(taken) <= 2, taken


def test_translation_requests_in_several_languages_are_translation(shipped: TextModel) -> None:
    layer = TextModelLayer(shipped)
    missed = [text[:40] for text in TRANSLATION if layer.classify(text).task != "translation"]

    assert len(missed) <= 1, missed
