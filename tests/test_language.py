import pytest

from transforms.extraction.language import detect_language

TEXTS = {
    "en": "The government announced on Tuesday that it would raise spending on railways "
          "and bridges over the next five years.",
    "de": "Die Regierung kündigte am Dienstag an, dass sie die Ausgaben für Eisenbahnen und "
          "Brücken in den nächsten fünf Jahren erhöhen werde.",
    "uk": "Уряд оголосив у вівторок, що протягом наступних п'яти років збільшить витрати "
          "на залізниці та мости.",
    "ru": "Правительство объявило во вторник, что в ближайшие пять лет увеличит расходы "
          "на железные дороги и мосты.",
}


@pytest.mark.parametrize("lang", sorted(TEXTS))
def test_detects_the_four_demo_languages(lang):
    code, prob = detect_language(TEXTS[lang])
    assert code == lang and prob is not None and prob > 0.9


def test_short_text_uses_hint_then_und():
    assert detect_language("Kyiv", "uk") == ("uk", None)
    assert detect_language("", None) == ("und", None)


def test_detection_is_deterministic():
    mixed = "Kyiv Київ Berlin Берлин news"
    assert len({detect_language(mixed * 3) for _ in range(5)}) == 1
