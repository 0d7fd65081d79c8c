"""The frozen encoders: one module each, and the registry that names them.

`base` (the `Encoder` protocol, `Needs`, `SetEncoder`) and `registry` (`register`, `lookup`,
`load_set_encoders`, `planned_specs`, plugins) are what the pipeline and predict use; every
other module is an encoder that registers itself when the registry imports it: `text`,
`visual` (open_clip) and `efficientnet`, `face_sets` (over `faces`), `speech`, `prosody`,
`logmel`. `weights` and `pip_models` load weights without a network (pip-shipped models
assembled once under ~/.cache/emo); `fingerprint` holds the preprocessing keys a set's
fingerprint takes.
"""
