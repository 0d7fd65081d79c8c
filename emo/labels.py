"""MELD's label sets, in the one fixed order every array and report in `emo` uses.

The emotion order follows the class counts published with MELD (neutral first, then by
train frequency), so index 0 is always the majority class.
"""

EMOTIONS: tuple[str, ...] = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
SENTIMENTS: tuple[str, ...] = ("neutral", "positive", "negative")

EMOTION_INDEX = {name: i for i, name in enumerate(EMOTIONS)}
SENTIMENT_INDEX = {name: i for i, name in enumerate(SENTIMENTS)}

# The MELD baseline's official class weights, given there as
# (neutral, surprise, fear, sadness, joy, disgust, anger) = (4, 15, 15, 3, 1, 6, 3),
# re-ordered here to EMOTIONS.
MELD_CLASS_WEIGHTS: tuple[float, ...] = (4.0, 1.0, 15.0, 3.0, 3.0, 6.0, 15.0)

MODALITIES: tuple[str, ...] = ("text", "audio", "visual")
