"""Features of an answer against its question's reference answers, for the ``offline`` judge.

Two kinds: dense features (TF-IDF cosine similarities of the answer to the correct and to the incorrect
references, word overlaps, yes/no polarity, length, punctuation) and sparse hashed n-grams (the answer's words and
characters, plus a "role template" that replaces each word by where it occurs: question, correct or incorrect
references, both, or nowhere). Words after a negator in the same clause are marked, so "no, X" and "X" differ.
"""
from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

HASH_BITS = 18
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
CLAUSE = re.compile(r"[.,;:!?()\n]+")
NEGATORS = {"no", "not", "never", "nothing", "none", "nobody", "neither", "nor", "cannot", "without"}
STOP = {"a", "an", "the", "of", "to", "in", "on", "at", "is", "are", "was", "were", "be", "been", "it", "its", "that",
        "this", "and", "or", "for", "as", "by", "with", "you", "your", "i", "do", "does", "did", "if", "will", "would",
        "can", "there", "they", "their", "what", "which", "who", "have", "has", "had"}
POLARITY = {"yes": 1.0, "no": -1.0}


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def is_negator(word: str) -> bool:
    return word in NEGATORS or word.endswith("n't")


def negation_scoped(text: str) -> list[str]:
    """Words, with a negator written as NEG and the words after it in the same clause as ``~word``."""
    out = []
    for clause in CLAUSE.split(text.lower()):
        negated = False
        for w in WORD.findall(clause):
            if is_negator(w):
                negated = not negated
                out.append("NEG")
            else:
                out.append("~" + w if negated else w)
    return out


def bucket(gram: str) -> int:
    """A stable hash bucket (crc32; Python's own hash is salted per process)."""
    return zlib.crc32(gram.encode()) & ((1 << HASH_BITS) - 1)


def word_grams(text: str) -> list[str]:
    ws = negation_scoped(text)
    return ["w:" + w for w in ws] + ["b:" + a + " " + b for a, b in zip(ws, ws[1:])]


def char_grams(text: str) -> list[str]:
    padded = " " + " ".join(words(text)) + " "
    return ["c:" + padded[i:i + n] for n in (3, 4, 5) for i in range(len(padded) - n + 1)]


ANALYZERS = (word_grams, char_grams)


def grams(text: str) -> list[str]:
    return word_grams(text) + char_grams(text)


def idf_weights(texts: Sequence[str]) -> np.ndarray:
    """Smoothed inverse document frequency of every hash bucket over ``texts``."""
    df = np.zeros(1 << HASH_BITS)
    for text in texts:
        df[list({bucket(g) for g in grams(text)})] += 1
    return np.log((1 + len(texts)) / (1 + df)) + 1


def normalised(vec: dict[int, float]) -> dict[int, float]:
    norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
    return {k: v / norm for k, v in vec.items()}


def tfidf(text: str, analyzer, idf: np.ndarray) -> dict[int, float]:
    """Unit-length sublinear TF-IDF vector (bucket -> weight)."""
    counts = Counter(bucket(g) for g in analyzer(text))
    return normalised({k: (1.0 + math.log(v)) * idf[k] for k, v in counts.items()})


def cosine(a: dict[int, float], b: dict[int, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(k, 0.0) for k, v in a.items())


def polarity(text: str) -> float:
    """+1 for an answer starting with "yes", -1 with "no", else 0."""
    ws = words(text)
    return POLARITY.get(ws[0], 0.0) if ws else 0.0


def content(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOP}


class ReferenceSet:
    """One question with its correct and incorrect reference answers, vectorised once for many answers."""

    def __init__(self, question: str, correct: Sequence[str], incorrect: Sequence[str], idf: np.ndarray):
        self.idf = idf
        self.question_words = " ".join(words(question))
        self.question = {a: tfidf(question, a, idf) for a in ANALYZERS}
        self.vectors = {(a, side): [tfidf(r, a, idf) for r in refs]
                        for a in ANALYZERS for side, refs in (("c", correct), ("i", incorrect))}
        self.centroids = {key: normalised(sum((Counter(v) for v in vecs), Counter()))
                          for key, vecs in self.vectors.items()}
        self.words = {"c": set().union(*map(content, correct)), "i": set().union(*map(content, incorrect)),
                      "q": content(question)}
        self.polarity = {side: float(np.mean([polarity(r) for r in refs])) if refs else 0.0
                         for side, refs in (("c", correct), ("i", incorrect))}

    def dense(self, answer: str) -> list[float]:
        """Similarities to the correct and incorrect references, overlaps, polarity, length, punctuation."""
        feats = []
        for analyzer in ANALYZERS:
            a = tfidf(answer, analyzer, self.idf)
            blocks = {}
            for side in ("c", "i"):
                sims = [cosine(a, v) for v in self.vectors[analyzer, side]] or [0.0]
                blocks[side] = [max(sims), sum(sims) / len(sims), cosine(a, self.centroids[analyzer, side])]
            feats += blocks["c"] + blocks["i"] + [c - i for c, i in zip(blocks["c"], blocks["i"])]
            feats.append(cosine(a, self.question[analyzer]))
        ans, w = content(answer), self.words
        n = max(len(ans), 1)
        novel = ans - w["c"] - w["i"] - w["q"]
        feats += [len(ans & w["c"]) / n, len(ans & w["i"]) / n, len(novel) / n, len(ans & w["q"]) / n,
                  math.log1p(len(ans - w["q"])), math.log1p(len(novel))]
        weight = sum(self.idf[bucket("w:" + x)] for x in ans) or 1.0
        feats += [sum(self.idf[bucket("w:" + x)] for x in ans & (w["c"] - w["i"])) / weight,
                  sum(self.idf[bucket("w:" + x)] for x in ans & (w["i"] - w["c"])) / weight]
        low = " ".join(words(answer))
        feats.append(float(bool(low) and low in self.question_words))
        p = polarity(answer)
        feats += [p * self.polarity["c"], p * self.polarity["i"], abs(p)]
        ws, stripped = words(answer), answer.strip()
        feats += [math.log1p(len(ws)), float(not ws), float(sum(map(is_negator, ws)) % 2),
                  float(stripped.endswith("?")), float("?" in stripped), float(stripped[-1:] in ".!\"'")]
        return feats

    def template(self, answer: str) -> list[str]:
        """The answer's words as roles: Q (in the question), C or I (only in correct or incorrect references),
        B (in both), _ (new); stop words and NEG stay themselves; negated words get a ``~``."""
        w = self.words
        out = []
        for word in negation_scoped(answer):
            neg, word = ("~", word[1:]) if word.startswith("~") else ("", word)
            if word == "NEG" or word in STOP:
                role = word
            elif word in w["q"]:
                role = "Q"
            elif word in w["c"]:
                role = "B" if word in w["i"] else "C"
            else:
                role = "I" if word in w["i"] else "_"
            out.append(neg + role)
        return out

    def sparse(self, answer: str) -> list[int]:
        """Hash buckets of the answer's word and character n-grams and of its role template's 1- to 3-grams."""
        t = self.template(answer)
        roles = ["t:" + " ".join(t[i:i + n]) for n in (1, 2, 3) for i in range(len(t) - n + 1)]
        return sorted({bucket(g) for g in grams(answer) + roles})

