"""Media in, arrays out: probing a clip (`probe`), decoding sampled frames and mono audio
with bounded memory (`decode`) and the seed's log-mel spectrogram (`mel`). No models here:
the decoding workers import this package, so it stays free of torch and the encoders."""
