"""emo: multimodal emotion recognition for conversational video.

Frozen encoders run once (`emo.extract`) into a feature cache (`emo.cache`); small heads
train from that cache in seconds (`emo.fuse`). Data flows one way:
media -> extract -> cache -> fuse -> reports.
"""

__version__ = "0.1.0"
