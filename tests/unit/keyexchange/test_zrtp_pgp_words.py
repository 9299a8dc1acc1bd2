"""The PGP word list behind ZRTP's B256 SAS (RFC 6189 §5.1.6): shape, ends of both lists, and
known renderings."""

from __future__ import annotations

from gateway.plugins.keyexchange.zrtp.pgp_words import EVEN_WORDS, ODD_WORDS


def test_each_list_has_256_distinct_lowercase_words() -> None:
    for words in (EVEN_WORDS, ODD_WORDS):
        assert len(words) == 256
        assert len(set(words)) == 256
        assert all(w.isalpha() and w == w.lower() for w in words)
    assert not set(EVEN_WORDS) & set(ODD_WORDS)


def test_first_and_last_entries() -> None:
    assert EVEN_WORDS[0:3] == ("aardvark", "absurd", "accrue")
    assert ODD_WORDS[0:3] == ("adroitness", "adviser", "aftermath")
    assert EVEN_WORDS[255] == "zulu"
    assert ODD_WORDS[255] == "yucatan"


def test_known_b256_rendering() -> None:
    sasvalue = 0xD269B071
    first, second = sasvalue.to_bytes(4, "big")[:2]
    assert (first, second) == (0xD2, 0x69)
    assert EVEN_WORDS[first] == "standard"
    assert ODD_WORDS[second] == "guitarist"
    assert f"{EVEN_WORDS[first]} {ODD_WORDS[second]}" == "standard guitarist"


def test_linphone_example_words_are_on_the_right_lists() -> None:
    assert "skullcap" in EVEN_WORDS
    assert "vocalist" in ODD_WORDS
