"""Corpus layouts: how each corpus names its files, labels, speakers and counts.

`ser.data.corpora.base` holds what they share (the `Corpus` class, `CorpusError`, the
registry); each corpus family has a module of its own. Importing this package registers
every layout, in the order below (the order `recognise` reports look-alikes in).
"""

from ser.data.corpora.base import CORPORA, Corpus, CorpusError, get_corpus, natural_key, recognise

# In registration order, which recognise lists look-alikes in.
# isort: off
from ser.data.corpora.emodb import EmoDB, Synthetic
from ser.data.corpora.casia import Casia
from ser.data.corpora.emovo import Emovo
from ser.data.corpora.iemocap import Iemocap
from ser.data.corpora.ravdess import Ravdess
from ser.data.corpora.savee import Savee
from ser.data.corpora.crema_d import CremaD
from ser.data.corpora.tess import Tess
# isort: on

__all__ = [
    "CORPORA", "Casia", "Corpus", "CorpusError", "CremaD", "EmoDB", "Emovo", "Iemocap", "Ravdess",
    "Savee", "Synthetic", "Tess", "get_corpus", "natural_key", "recognise",
]
