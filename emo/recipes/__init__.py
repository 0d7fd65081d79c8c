"""Recipes: library functions that chain the verbs into one workflow.

Why a layer of its own: a recipe such as the demo (synth -> extract -> fit -> eval ->
ablate) needs `emo.data`, `emo.extract`, `emo.cache` and `emo.fuse` at once, which no
one of those packages may import (data flows one way), and it is more than a command,
because tests and notebooks call it without a terminal. So a recipe sits above the
pipeline packages and below `emo.commands`: it decides what to run and what to reuse,
reports progress as `emo.progress` events, returns a typed result and never prints. The
command of the same name only parses options and renders.
"""
