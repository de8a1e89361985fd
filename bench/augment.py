"""Training-only request wordings in many languages, wrapped around real text and real code.

Real users ask for a translation, a summary, an extraction, a rewrite, tests, docs, a review or a fix in their own
language, around material they paste. The labelled real prompts hold only a few wordings per language; these
templates add more, so the classifier learns the ask rather than the pasted material. Only the classifier's training
uses them: every reported number comes from real prompts of the test split.
"""

from __future__ import annotations

import random
from typing import Any

# {b}: the pasted material; {L}: a target language's name in the wording's language.
REQUESTS: dict[str, dict[str, tuple[str, ...]]] = {
    "translation": {
        "en": ("Translate this into {L}: {b}", "can you translate to {L} pls\n\n{b}", "How do I say this in {L}? \"{b}\"",
               "{b}\n\ntranslate the above to {L}", "Give me a {L} translation of the following text:\n{b}"),
        "zh": ("把下面这段话翻译成{L}：{b}", "请翻译成{L}：\n{b}", "{b}\n帮我翻成{L}", "这句话用{L}怎么说：{b}"),
        "ja": ("次の文を{L}に翻訳してください：{b}", "{b}\nこれを{L}に訳して", "以下を{L}に翻訳お願いします。\n{b}"),
        "ko": ("다음을 {L}로 번역해 줘: {b}", "{b}\n이거 {L}로 번역해 주세요"),
        "fr": ("Traduis ce texte en {L} : {b}", "Tu peux me traduire ça en {L} ?\n{b}", "{b}\n\nen {L} stp"),
        "de": ("Übersetze bitte ins {L}: {b}", "Kannst du das auf {L} übersetzen?\n{b}"),
        "es": ("Traduce esto al {L}: {b}", "¿Cómo se dice esto en {L}? {b}", "{b}\n\ntradúcelo al {L} por favor"),
        "it": ("Traduci in {L}: {b}", "Mi traduci questo testo in {L}?\n{b}"),
        "pt": ("Traduza para o {L}: {b}", "Pode traduzir isso pro {L}? {b}"),
        "ru": ("Переведи на {L}: {b}", "Переведите, пожалуйста, этот текст на {L}:\n{b}", "{b}\nкак это будет на {L}?"),
        "tr": ("Bunu {L} çevir: {b}", "Şu metni {L} çevirir misin?\n{b}"),
        "vi": ("Dịch sang {L}: {b}", "Dịch giúp mình đoạn này sang {L} nhé:\n{b}"),
        "id": ("Terjemahkan ke {L}: {b}", "Tolong terjemahkan teks ini ke {L}:\n{b}"),
        "nl": ("Vertaal dit naar het {L}: {b}",),
        "pl": ("Przetłumacz na {L}: {b}",),
        "ar": ("ترجم هذا النص إلى {L}: {b}",),
        "hi": ("इसका {L} में अनुवाद करो: {b}",),
        "th": ("ช่วยแปลเป็นภาษา{L}หน่อย: {b}",),
        "uk": ("Переклади на {L}: {b}",),
        "sw": ("Tafsiri kwa {L}: {b}",),
    },
    "summarization": {
        "en": ("Summarize this in two sentences:\n{b}", "tl;dr please\n\n{b}", "Give me the gist of this text: {b}",
               "{b}\n\nCan you sum this up in a few bullet points?", "Write a short summary of the following:\n{b}"),
        "zh": ("请总结下面这段话：{b}", "用一句话概括：{b}", "{b}\n总结一下主要内容", "帮我写个摘要：\n{b}"),
        "ja": ("次の文章を要約してください：{b}", "{b}\nこれを三行でまとめて"),
        "ko": ("다음 글을 요약해 주세요: {b}", "{b}\n한 줄로 요약해줘"),
        "fr": ("Résume ce texte en quelques lignes : {b}", "{b}\n\nTu peux me faire un résumé ?"),
        "de": ("Fasse diesen Text kurz zusammen: {b}", "{b}\n\nZusammenfassung in drei Sätzen bitte"),
        "es": ("Resume este texto: {b}", "{b}\n\nhazme un resumen corto"),
        "it": ("Riassumi questo testo in poche frasi: {b}",),
        "pt": ("Resuma este texto: {b}", "Faça um resumo de: {b}"),
        "ru": ("Кратко перескажи этот текст: {b}", "Сделай краткое резюме:\n{b}"),
        "tr": ("Bu metni özetle: {b}",),
        "vi": ("Tóm tắt đoạn văn này: {b}",),
        "id": ("Ringkas teks berikut: {b}",),
        "ar": ("لخص هذا النص: {b}",),
        "hi": ("इस पाठ का सारांश लिखिए: {b}",),
        "nl": ("Vat dit samen: {b}",),
    },
    "extraction": {
        "en": ("Extract all names, places and organisations from this text as a JSON list:\n{b}",
               "Pull out every date and number mentioned here: {b}", "List the key entities in: {b}",
               "From the text below, extract the people mentioned and their roles.\n\n{b}"),
        "zh": ("从下面这段话中提取所有的人名和地名：{b}", "提取文中的关键词，用逗号分隔：{b}", "请抽取以下文本中的时间、地点、人物：\n{b}"),
        "ja": ("次の文章からキーワードを抽出してください：{b}", "この文から日付と場所を抜き出して：{b}"),
        "ko": ("다음 글에서 사람 이름과 장소를 추출해 주세요: {b}",),
        "fr": ("Extrais les noms de personnes et de lieux de ce texte : {b}",),
        "de": ("Extrahiere alle Namen und Orte aus diesem Text als Liste: {b}",),
        "es": ("Extrae los nombres propios y las fechas de este texto: {b}",),
        "it": ("Estrai i nomi di persone e luoghi da questo testo: {b}",),
        "pt": ("Extraia as entidades nomeadas deste texto: {b}",),
        "ru": ("Извлеки из текста все имена, даты и названия организаций: {b}",),
        "tr": ("Bu metindeki kişi ve yer adlarını çıkar: {b}",),
        "vi": ("Trích xuất tên người và địa điểm trong đoạn sau: {b}",),
        "id": ("Ekstrak nama orang dan tempat dari teks ini: {b}",),
    },
    "writing": {
        "en": ("Rewrite this to sound more professional: {b}", "make this more polite:\n{b}",
               "Write a short poem inspired by this: {b}", "Polish the wording of this paragraph:\n{b}",
               "Write a tweet announcing this: {b}"),
        "zh": ("把这段话改写得更正式一些：{b}", "帮我润色一下这段文字：{b}", "以此为题写一首诗：{b}", "根据下面的内容写一篇短文：{b}"),
        "ja": ("次の文をもっと丁寧な表現に書き換えてください：{b}", "この内容で短い詩を書いて：{b}"),
        "ko": ("이 문장을 더 공손하게 고쳐 주세요: {b}",),
        "fr": ("Reformule cette phrase de façon plus formelle : {b}", "Écris un petit poème sur ce thème : {b}"),
        "de": ("Formuliere das bitte freundlicher: {b}", "Schreib ein kurzes Gedicht darüber: {b}"),
        "es": ("Reescribe esto con un tono más formal: {b}", "Escribe un poema corto sobre esto: {b}"),
        "it": ("Riscrivi questa frase in modo più formale: {b}",),
        "pt": ("Reescreva de forma mais formal: {b}",),
        "ru": ("Перепиши этот текст более официальным языком: {b}", "Напиши стихотворение на эту тему: {b}"),
        "tr": ("Bu cümleyi daha resmi bir dille yeniden yaz: {b}",),
        "vi": ("Viết lại câu này cho trang trọng hơn: {b}",),
        "id": ("Tulis ulang kalimat ini agar lebih formal: {b}",),
    },
}
CODE_REQUESTS: dict[str, dict[str, tuple[str, ...]]] = {
    "testing": {
        "en": ("Write pytest unit tests for this function, including edge cases:\n\n{b}", "{b}\n\nadd tests for this pls"),
        "zh": ("请为这个函数写单元测试：\n\n{b}", "{b}\n\n帮我写几个测试用例，覆盖边界情况"),
        "ja": ("この関数のテストコードを書いてください：\n\n{b}",),
        "de": ("Schreib Unit-Tests für diese Funktion:\n\n{b}",), "fr": ("Écris des tests unitaires pour cette fonction :\n\n{b}",),
        "es": ("Escribe pruebas unitarias para esta función:\n\n{b}",), "ru": ("Напиши юнит-тесты для этой функции:\n\n{b}",),
        "ko": ("이 함수에 대한 단위 테스트를 작성해 주세요:\n\n{b}",), "pt": ("Escreva testes unitários para esta função:\n\n{b}",),
    },
    "documentation": {
        "en": ("Add a docstring to this function:\n\n{b}", "Write the README section that documents this function:\n\n{b}"),
        "zh": ("给这个函数加上注释和文档字符串：\n\n{b}",), "ja": ("この関数にドキュメントコメントを追加してください：\n\n{b}",),
        "de": ("Dokumentiere diese Funktion mit einem Docstring:\n\n{b}",), "fr": ("Ajoute une docstring à cette fonction :\n\n{b}",),
        "es": ("Documenta esta función con un docstring:\n\n{b}",), "ru": ("Добавь документацию (docstring) к этой функции:\n\n{b}",),
    },
    "code_review": {
        "en": ("Review this code and suggest improvements:\n\n{b}", "What does this function do?\n\n{b}",
               "{b}\n\nany issues with this code? how would you make it cleaner"),
        "zh": ("帮我审查一下这段代码，有什么可以改进的：\n\n{b}", "这段代码是做什么的？\n\n{b}"),
        "ja": ("このコードをレビューして改善点を教えてください：\n\n{b}",), "ko": ("이 코드를 리뷰하고 개선점을 알려 주세요:\n\n{b}",),
        "de": ("Kannst du diesen Code reviewen?\n\n{b}",), "fr": ("Peux-tu relire ce code et proposer des améliorations ?\n\n{b}",),
        "es": ("Revisa este código y sugiere mejoras:\n\n{b}",), "ru": ("Сделай код-ревью этой функции:\n\n{b}",),
        "pt": ("Revise este código e sugira melhorias:\n\n{b}",),
    },
    "debugging": {
        "en": ("This function gives the wrong result for some inputs, can you find the bug?\n\n{b}",
               "{b}\n\nI get IndexError: list index out of range when I call this, why?"),
        "zh": ("这个函数运行报错了，帮我找找bug：\n\n{b}", "{b}\n\n为什么这段代码输出不对？"),
        "ja": ("この関数でエラーが出ます。原因を教えてください：\n\n{b}",), "ko": ("이 코드에서 오류가 나요. 왜 그런가요?\n\n{b}",),
        "de": ("Diese Funktion liefert falsche Ergebnisse, wo ist der Fehler?\n\n{b}",),
        "fr": ("Cette fonction plante avec une erreur, tu vois pourquoi ?\n\n{b}",),
        "es": ("Esta función da un error, ¿dónde está el fallo?\n\n{b}",), "ru": ("Эта функция выдаёт ошибку, помоги найти баг:\n\n{b}",),
    },
    "coding": {
        "en": ("Implement this function:\n\n{b}", "Port this to JavaScript:\n\n{b}", "{b}\n\ncomplete the code"),
        "zh": ("请实现这个函数：\n\n{b}", "把这段Python代码改写成Java：\n\n{b}"), "ja": ("この関数を実装してください：\n\n{b}",),
        "ko": ("이 함수를 구현해 주세요:\n\n{b}",), "de": ("Implementiere diese Funktion:\n\n{b}",),
        "fr": ("Implémente cette fonction :\n\n{b}",), "es": ("Implementa esta función:\n\n{b}",),
        "ru": ("Реализуй эту функцию:\n\n{b}",), "pt": ("Implemente esta função:\n\n{b}",),
    },
}
LANGUAGE_NAMES: dict[str, tuple[str, ...]] = {
    "en": ("English", "French", "Spanish", "German", "Chinese", "Japanese"), "zh": ("英文", "英语", "日语", "法语"),
    "ja": ("英語", "中国語"), "ko": ("영어", "일본어"), "fr": ("anglais", "espagnol", "allemand"), "de": ("Englische", "Französische"),
    "es": ("inglés", "francés"), "it": ("inglese", "francese"), "pt": ("inglês", "espanhol"), "ru": ("английский", "немецкий"),
    "tr": ("İngilizceye", "Almancaya"), "vi": ("tiếng Anh", "tiếng Pháp"), "id": ("bahasa Inggris", "bahasa Jepang"),
    "nl": ("Engels", "Duits"), "pl": ("angielski", "niemiecki"), "ar": ("الإنجليزية", "الفرنسية"), "hi": ("अंग्रेज़ी", "फ़्रेंच"),
    "th": ("อังกฤษ", "ญี่ปุ่น"), "uk": ("англійську", "польську"), "sw": ("Kiingereza", "Kifaransa"),
}  # fmt: skip


def augment(bodies: list[str], code: list[str], per_template: int, seed: int = 0) -> list[dict[str, Any]]:
    """Labelled prompts: every wording of every task, each around `per_template` random bodies (or code)."""
    rng = random.Random(seed)
    out = []
    for table, pool in ((REQUESTS, bodies), (CODE_REQUESTS, code)):
        for task, by_language in table.items():
            for language, wordings in by_language.items():
                for wording in wordings:
                    for _ in range(per_template):
                        names = LANGUAGE_NAMES.get(language, ("English",))
                        text = wording.format(b=rng.choice(pool), L=rng.choice(names))
                        out.append({"text": text, "task": task, "accept": [task], "language": language,
                                    "source": "augment", "format": "augment"})  # fmt: skip
    return out
