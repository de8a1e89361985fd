"""The translation rule: a prompt is `translation` only when it asks for a translation.

Most non-English prompts in the training data that are not in English's majority script are translation requests, so
a model of n-grams learns "foreign text → translation": a Russian request for a poem or an Italian request for a
JavaScript function looks like one. The rule is the other way round: the prompt must contain a request to
translate, in one of the ways users ask for one (the verb in 20 languages, "how do you say", "in English", "into
Japanese", ...). Without one, the next most likely task stands. The cues aim at recall (they veto, they never decide):
on the real-traffic train split they are in all 133 translation requests (and in 7 of 2,063 others).
"""

from __future__ import annotations

import re

TRANSLATION_CUES = re.compile(
    "|".join(
        (
            r"translat|traduz|traduc|tradu[ci]|übersetz|uebersetz|перев[оеи]д|переклад|перекла",
            r"по-(?:английски|русски|немецки|французски|испански|китайски|японски|украински)",
            r"翻译|翻譯|翻訳|翻成|译成|譯成|訳し|訳して|和訳|英訳",
            r"(?:英語|日本語|中国語|韓国語|英文|中文|英语|日语)(?:に|で|怎么|是什么|にする|にして)",
            r"怎么说|怎麼說|用英文|用英语|用中文",
            r"번역|영어로|한국어로|çevir|dịch|terjemah|अनुवाद|ترجم|vertaal|przetłum|tafsiri|แปล|ในภาษา|sang tiếng",
            r"how (?:do|would|can) (?:you|i|we) say|c[óo]mo se dice|comment (?:dit-on|on dit)|wie sagt man",
            r"come si dice|como se diz",
            r"what(?:'s| is) the (?:\w+ )?(?:word )?for",
            r"the (?:english|french|spanish|german|italian|chinese|japanese|russian) (?:for|word|version)",
            r"\b(?:in|into|to) (?:english|french|spanish|german|italian|portuguese|chinese|mandarin|japanese|korean"
            r"|russian|arabic|hindi|turkish|dutch|polish|vietnamese|thai|indonesian)\b",
            r"en (?:français|anglais|espagnol|allemand|inglés|francés|alemán|español|inglese|italiano)",
            r"in inglese|em inglês",
            r"para o (?:inglês|português)|auf (?:englisch|deutsch|französisch)|ins (?:englische|deutsche)",
            r"на (?:английский|русский|английском|русском|немецкий|украинский)",
        )
    ),
    re.IGNORECASE,
)


def asks_for_translation(text: str) -> bool:
    return TRANSLATION_CUES.search(text) is not None
