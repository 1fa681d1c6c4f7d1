"""sklearn-style estimators built on grukit's GRU for the seed's uses: text and sequence classification,
tagging, translation, forecasting and video; and the classical baselines they are measured against."""

from grukit.tasks.forecasting import Forecaster
from grukit.tasks.sequence import SequenceClassifier
from grukit.tasks.tagging import SequenceTagger
from grukit.tasks.text import TextClassifier
from grukit.tasks.translation import Translator
from grukit.tasks.video import VideoClassifier

__all__ = ["Forecaster", "SequenceClassifier", "SequenceTagger", "TextClassifier", "Translator", "VideoClassifier"]
