"""Dialogues as index structures over a split's rows, for the context heads.

MELD is emotion recognition *in conversation*: a dialogue is every row with one
Dialogue_ID, in Utterance_ID order. Rows are ordered by their ids, never by position:
Utterance_IDs have gaps (MELD drops some utterances) and the cache may store rows in any
order. A row whose clip failed is still a turn of its dialogue (its text usually
survives); the model sees its presence flags, not a hole.

A batch of dialogues is a set of row indices plus a `layout` long[D, L]: row positions
*within the batch* for each dialogue's turns in order, -1 where a shorter dialogue is
padded. The context model scatters utterance embeddings into [D, L, P] with it and
gathers them back, so per-utterance evaluation and reports stay exactly as they were.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

FIRST_TURN, SAME_SPEAKER, OTHER_SPEAKER = 0, 1, 2  # "same speaker as the previous turn" ids
OTHER = "<other>"  # speakers not in the model's vocabulary share this embedding


@dataclass
class Dialogues:
    """Each dialogue's rows in turn order, and each row's previous-speaker relation."""

    turns: list[np.ndarray]  # per dialogue: row indices into the split, in Utterance_ID order
    turn_change: np.ndarray  # int64[N]: FIRST_TURN, SAME_SPEAKER or OTHER_SPEAKER per row

    @property
    def sizes(self) -> np.ndarray:
        return np.asarray([len(t) for t in self.turns], dtype=np.int64)

    @classmethod
    def from_ids(cls, dialogue_id: np.ndarray, utterance_id: np.ndarray, speaker: list[str] | None) -> "Dialogues":
        dialogue_id = np.asarray(dialogue_id, dtype=np.int64)
        utterance_id = np.asarray(utterance_id, dtype=np.int64)
        order = np.lexsort((utterance_id, dialogue_id))  # by dialogue, then utterance id
        boundaries = np.flatnonzero(np.diff(dialogue_id[order])) + 1
        turns = np.split(order, boundaries) if len(order) else []
        change = np.full(len(dialogue_id), FIRST_TURN, dtype=np.int64)
        if speaker is not None:
            for rows in turns:
                for previous, row in zip(rows[:-1], rows[1:]):
                    change[row] = SAME_SPEAKER if speaker[row] == speaker[previous] else OTHER_SPEAKER
        return cls(turns=list(turns), turn_change=change)


def speaker_vocabulary(speakers: list[str], limit: int = 64, min_turns: int = 20) -> tuple[str, ...]:
    """The training split's recurring speakers (MELD: the six friends and a few more);
    index 0 is OTHER for everyone else, so an unseen speaker at test time is not an error."""
    counts = Counter(speakers)
    frequent = [name for name, n in counts.most_common(limit) if n >= min_turns and name != OTHER]
    return (OTHER, *sorted(frequent))


def speaker_ids(speakers: list[str], vocabulary: tuple[str, ...]) -> np.ndarray:
    lookup = {name: i for i, name in enumerate(vocabulary)}
    return np.asarray([lookup.get(name, 0) for name in speakers], dtype=np.int64)


def pack(dialogues: list[np.ndarray], max_utterances: int) -> list[list[int]]:
    """Group dialogues (given by position in `dialogues`) into batches of at most
    `max_utterances` turns; a longer dialogue is a batch of its own, never cut."""
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, rows in enumerate(dialogues):
        if current and size + len(rows) > max_utterances:
            batches.append(current)
            current, size = [], 0
        current.append(i)
        size += len(rows)
    if current:
        batches.append(current)
    return batches


@dataclass
class DialogueBatch:
    rows: Tensor  # long[B]: split rows, dialogue after dialogue, each in turn order
    layout: Tensor  # long[D, L]: positions in `rows` per dialogue turn, -1 = padding


def make_batch(turns: list[np.ndarray], device: torch.device) -> DialogueBatch:
    longest = max(len(t) for t in turns)
    layout = np.full((len(turns), longest), -1, dtype=np.int64)
    start = 0
    for d, rows in enumerate(turns):
        layout[d, : len(rows)] = np.arange(start, start + len(rows))
        start += len(rows)
    rows = np.concatenate(turns)
    return DialogueBatch(torch.as_tensor(rows, device=device), torch.as_tensor(layout, device=device))


def dialogue_batches(
    dialogues: Dialogues, max_utterances: int, device: torch.device, generator: torch.Generator | None = None
) -> list[DialogueBatch]:
    """Whole dialogues per batch; shuffled dialogue order when a generator is given (training)."""
    order = list(range(len(dialogues.turns)))
    if generator is not None:
        order = torch.randperm(len(order), generator=generator).tolist()
    chosen = [dialogues.turns[i] for i in order]
    batches = []
    for group in pack(chosen, max_utterances):
        turns = [chosen[i] for i in group]
        if generator is not None and sum(len(t) for t in turns) < 2:
            continue  # batch norm cannot train on a single row
        batches.append(make_batch(turns, device))
    return batches
