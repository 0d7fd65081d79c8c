"""The fit's fast kernels compute the seed's functions: the packed mel CNN is the padded
`nn.Conv1d` model clip by clip, the CPU GRU is `nn.GRU` over packed sequences (outputs and
every gradient), thread settings come back as they were, and a bf16 fit agrees with fp32."""

from __future__ import annotations

import emo.fuse  # noqa: F401, I001 - first: sets OpenMP's passive wait policy before torch loads

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from emo.fuse.config import FitConfig
from emo.fuse import packed_pool, strip_conv
from emo.fuse.allocator import keep_freed_memory
from emo.fuse.mel_cnn import MelCNN, StripPlan, output_lengths, strip_length
from emo.fuse.recurrence import run_gru
from emo.fuse.threads import large_kernels, one_thread, small_kernels
from emo.fuse.train import fit_splits
from synthetic_features import make_synthetic_split, to_feature_sets

# mixed lengths: long, odd, even, and shorter than the 6 frames one output needs (0 = no audio)
LENGTHS = [300, 12, 50, 7, 299, 100, 64, 8, 200, 33, 1, 0, 5, 4, 6, 3, 2, 9, 11, 13]


def padded_reference(cnn: MelCNN, mel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The seed's model, one clip at a time: its own frames, zero-padded to 6, through the
    nn.Conv1d stack, the mean over the outputs of real frames, the projection."""
    out = []
    for i, length in enumerate(lengths.tolist()):
        clip = nn.functional.pad(mel[i : i + 1, :, :length], (0, max(6 - length, 0)))
        hidden = cnn.conv(clip)[..., : int(output_lengths(torch.tensor(length)))]
        out.append(cnn.proj(hidden.mean(-1)))
    return torch.cat(out)


@pytest.fixture(params=["compiled", "torch"])
def kernel_path(request, monkeypatch):
    """Both ways the pool and its backward run: numba's kernels (float32 on a CPU) and the
    PyTorch operations a GPU or bf16 takes, here forced on the CPU."""
    if request.param == "torch":
        monkeypatch.setattr(packed_pool, "compiled", lambda tensor: False)
    return request.param


def test_packed_mel_cnn_equals_the_padded_conv1d_model_clip_by_clip(kernel_path):
    torch.manual_seed(0)
    cnn = MelCNN(40, (8, 16), 12)
    lengths = torch.tensor(LENGTHS)
    mel = torch.randn(len(LENGTHS), 40, 300) * 3  # frames past each length hold noise, never read
    weights = torch.randn(len(LENGTHS), 12)
    grads = []
    for encode in (cnn, lambda m, n: padded_reference(cnn, m, n)):
        cnn.zero_grad()
        out = encode(mel, lengths)
        (out * weights).sum().backward()
        grads.append((out.detach(), {name: p.grad.clone() for name, p in cnn.named_parameters()}))
    (packed, packed_grads), (reference, reference_grads) = grads
    torch.testing.assert_close(packed, reference, rtol=1e-5, atol=1e-5)
    assert packed_grads.keys() == reference_grads.keys() == {n for n, _ in cnn.named_parameters()}
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-5, msg=name)
    # a batch too short for one output everywhere is zero-padded, as the seed's was
    short = mel[:3, :, :4]
    torch.testing.assert_close(
        cnn(short, torch.tensor([4, 1, 0])), padded_reference(cnn, short, torch.tensor([4, 1, 0]))
    )


def test_mel_cnn_ties_in_the_pool_go_to_the_first_frame_as_max_pool_does(kernel_path):
    """Digital silence gives constant frames, so equal neighbours are real; the gradient of a
    tied pair goes to one frame, as nn.MaxPool1d sends it, not to both."""
    torch.manual_seed(1)
    cnn = MelCNN(4, (3, 5), 2)
    mel = torch.full((2, 4, 40), -13.8)
    mel[1, :, :20] = torch.randn(4, 20)
    lengths = torch.tensor([40, 33])
    grads = []
    for encode in (cnn, lambda m, n: padded_reference(cnn, m, n)):
        cnn.zero_grad()
        encode(mel, lengths).sum().backward()
        grads.append([p.grad.clone() for p in cnn.parameters()])
    for packed, reference in zip(*grads):
        torch.testing.assert_close(packed, reference, rtol=1e-4, atol=1e-5)


def test_the_compiled_pool_and_the_pytorch_pool_agree_exactly():
    """Same sums (to float32 rounding: the order of additions differs), the same frame gets
    each gradient (ties and zeros included), and the compiled backward's bias sums are the
    gradient's own sums over positions. Clips straddle the compiled passes' chunks."""
    torch.manual_seed(2)
    length, channels, batch = 200, 16, 7
    out = torch.randn(length, channels).clamp_min(0)
    out[50:70] = 0.5  # ties between the frames of a pair
    owner = torch.randint(0, batch + 1, (length // 2,))  # batch: nobody's position
    owner[:40] = 3  # one clip over several chunks
    per_clip = torch.cat([torch.randn(batch, channels), torch.zeros(1, channels)])
    results = []
    for path in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(packed_pool, "compiled", lambda tensor, path=path: path)
            sums, kept = packed_pool.pool_sums(out, owner, batch, keep=True)
            grad, bias = packed_pool.route_gradient(per_clip, owner, kept, torch.float32)
        results.append((sums, kept, grad, bias))
    (sums, kept, grad, bias), (reference_sums, reference_kept, reference_grad, no_bias) = results
    assert len(kept) == 1 and len(reference_kept) == 2 and no_bias is None  # one of each path ran
    torch.testing.assert_close(sums, reference_sums, rtol=1e-6, atol=1e-6)
    assert torch.equal(grad, reference_grad)
    torch.testing.assert_close(bias, grad.sum(0), rtol=1e-5, atol=1e-5)
    hidden = torch.randn(length, channels)
    hidden[:5, 0] = 0.0
    upstream = torch.randn_like(hidden)
    masked = upstream.clone()
    bias = packed_pool.relu_backward(masked, hidden)
    assert torch.equal(masked, torch.where(hidden > 0, upstream, 0.0))
    torch.testing.assert_close(bias, masked.sum(0), rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 700), min_size=1, max_size=60))
def test_strip_plan_puts_every_clip_whole_at_an_even_offset_and_owns_its_outputs(lengths):
    plan = StripPlan(np.array(lengths))
    need = [max(n, 6) + max(n, 6) % 2 for n in lengths]
    assert plan.need.tolist() == need and plan.length == strip_length(sum(need)) >= sum(need)
    used = np.zeros(plan.length, dtype=int)
    for offset, size in zip(plan.offset.tolist(), need):
        assert offset % 2 == 0
        used[offset : offset + size] += 1
    assert used.max() == 1 and used[: sum(need)].min() == 1  # end to end, no two clips share a frame
    # each clip owns its pooled outputs, inside its own frames' half-positions
    out_len = np.maximum((np.array(lengths) - 4) // 2, 1)
    for clip, (offset, count) in enumerate(zip(plan.offset.tolist(), out_len)):
        assert (plan.owner[offset // 2 : offset // 2 + count] == clip).all()
    assert (plan.owner == len(lengths)).sum() == plan.owner.size - out_len.sum()
    source = plan.source_index(max(lengths + [6]))
    assert len(source) == plan.length and source.min() >= 0


@pytest.mark.parametrize("frames", [1, 63, 64, 65, 1000, 1025, 12801, 40000])
def test_strip_lengths_waste_at_most_a_sixteenth_and_come_in_few_sizes(frames):
    length = strip_length(frames)
    assert length >= frames and length % 64 == 0
    assert length - frames < max(64, frames / 16)


def test_a_fit_meets_few_strip_lengths():  # oneDNN builds a kernel per shape
    assert len({strip_length(n) for n in range(1, 40001)}) < 120


@pytest.mark.parametrize("length", [3, 7, 2049])  # one output position; a few; a long strip
def test_strip_convolution_gradients_are_conv1ds(length):
    """strip_conv's weight gradient (one product over the unfolded strip, here a strip that
    starts inside a larger tensor, as a slice of one would) and input gradient (a product
    per tap) are nn.functional.conv1d's."""
    torch.manual_seed(3)
    whole = torch.randn(length + 4, 5)
    x = whole[2 : 2 + length].clone().requires_grad_(True)
    weight = torch.randn(4, 5, 3, requires_grad=True)
    out = nn.functional.conv1d(x.t().unsqueeze(0), weight)[0].t()  # [length - 2, 4]
    upstream = torch.randn_like(out)
    grad_x, grad_weight = torch.autograd.grad((out * upstream).sum(), [x, weight])
    inside = whole[2 : 2 + length]  # storage offset 10: the unfolded view must start there
    torch.testing.assert_close(strip_conv.weight_gradient(inside, upstream), grad_weight, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(strip_conv.input_gradient(upstream, weight.detach()), grad_x, rtol=1e-4, atol=1e-4)


def test_keep_freed_memory_sets_glibcs_thresholds_once():
    assert keep_freed_memory() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert keep_freed_memory() is keep_freed_memory()  # once per process


def test_mel_cnn_refuses_a_mel_that_wants_a_gradient():
    with pytest.raises(ValueError, match="does not backpropagate into the mel"):
        MelCNN()(torch.randn(2, 40, 20, requires_grad=True), torch.tensor([20, 10]))


def packed_gru(gru: nn.GRU, sequence: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The context head's GRU as it was: nn.GRU over packed sequences."""
    lengths = valid.sum(1)
    packed = nn.utils.rnn.pack_padded_sequence(sequence, lengths, batch_first=True, enforce_sorted=False)
    hidden, _ = gru(packed)
    return nn.utils.rnn.pad_packed_sequence(hidden, batch_first=True, total_length=sequence.shape[1])[0]


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
def test_cpu_gru_equals_nn_gru_over_packed_sequences(bidirectional, layers):
    torch.manual_seed(0)
    sizes = torch.tensor([23, 1, 5, 12, 7, 2, 9])  # dialogue lengths, one of a single turn
    width = 16
    gru = nn.GRU(width, width // 2, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    valid = torch.arange(int(sizes.max())) < sizes.unsqueeze(1)
    sequence = torch.randn(len(sizes), int(sizes.max()), width, requires_grad=True)
    upstream = torch.randn(len(sizes), int(sizes.max()), gru.hidden_size * (1 + bidirectional)) * valid.unsqueeze(-1)
    results = []
    for run in (run_gru, packed_gru):
        out = run(gru, sequence, valid)
        results.append((out[valid], torch.autograd.grad((out * upstream).sum(), [sequence, *gru.parameters()])))
    (fast, fast_grads), (reference, reference_grads) = results
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    for name, a, b in zip(["input", *(n for n, _ in gru.named_parameters())], fast_grads, reference_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_thread_settings_nest_and_come_back():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with small_kernels("cpu"):
            assert torch.get_num_threads() == 1
            with large_kernels():
                assert torch.get_num_threads() == 2
                with small_kernels("cpu"):  # nested: a no-op, large kernels still get 2
                    assert torch.get_num_threads() == 2
            assert torch.get_num_threads() == 1
            with one_thread():
                assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with large_kernels():  # outside a fit: leaves torch alone
            assert torch.get_num_threads() == 2
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with small_kernels("cuda"):  # a GPU model: the CPU threads are not the fit's to change
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


SPIN_PROBE = """
import os, sys
from emo.fuse.openmp_wait import spin_between_kernels
if sys.argv[1] == "torch-first":
    import torch
took = spin_between_kernels()
import torch
print(took, os.environ.get("GOMP_SPINCOUNT"))
"""


@pytest.mark.parametrize(
    "order, user_value, expected",
    [
        ("spin-first", None, "True 30000"),  # a training process: set before OpenMP loads
        ("spin-first", "5", "True 5"),  # the user's own setting is kept
        ("torch-first", None, "False None"),  # too late to take effect: nothing is changed
    ],
)
def test_a_training_process_spins_briefly_before_openmp_threads_sleep(order, user_value, expected):
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if user_value is not None:
        env["GOMP_SPINCOUNT"] = user_value
    probe = subprocess.run(
        [sys.executable, "-c", SPIN_PROBE, order], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    assert probe.stdout.split("\n")[-2] == expected


@pytest.mark.parametrize("command", ["fit", "ablate"])
def test_the_training_commands_ask_for_the_spin_before_anything_else(command, monkeypatch, tmp_path):
    """`emo fit` and `emo ablate` set the spin first thing, even for a run that then fails
    (emo's CLI itself never loads torch, tests/test_cli_speed.py)."""
    from typer.testing import CliRunner

    from emo.cli import app
    from emo.fuse import openmp_wait

    calls = []
    monkeypatch.setattr(openmp_wait, "spin_between_kernels", lambda: calls.append(command))
    result = CliRunner().invoke(app, [command, "--cache", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and calls == [command]


BF16_TOLERANCE = 0.03  # |dev weighted F1 (bf16) - dev weighted F1 (fp32)|, per epoch and at the best epoch


@pytest.mark.parametrize("context_model", ["none", "gru"])
def test_bf16_fit_agrees_with_fp32_on_dev(context_model):
    """bf16 autocast (the mel CNN's convolutions and the heads' matmuls in bf16; means,
    losses, the GRU and every weight in float32) follows the fp32 fit's dev scores within
    BF16_TOLERANCE epoch by epoch, from the same seed."""
    shapes = dict(text_dim=32, visual_dim=16, frames=4, mean_mel_frames=60, max_mel_frames=200)
    train = to_feature_sets(make_synthetic_split(400, "train", seed=0, **shapes))
    dev = to_feature_sets(make_synthetic_split(200, "dev", seed=1, **shapes))
    scores, losses = {}, {}
    for precision in ("fp32", "bf16"):
        config = FitConfig(epochs=5, device="cpu", seed=0, precision=precision, context_model=context_model)
        result = fit_splits(config, train, dev)
        scores[precision] = [row["dev"]["emotion"]["weighted_f1"] for row in result.history]
        losses[precision] = [row["dev"]["emotion"]["loss"] for row in result.history]
    assert max(scores["fp32"]) > 0.45  # it learned (the majority class scores ~0.3): two fits that work
    for epoch, (full, half) in enumerate(zip(scores["fp32"], scores["bf16"]), 1):
        assert abs(full - half) <= BF16_TOLERANCE, (epoch, scores)
    assert abs(max(scores["fp32"]) - max(scores["bf16"])) <= BF16_TOLERANCE
    assert losses["fp32"] != losses["bf16"]  # bf16 did run: its rounding shows in the losses
    torch.testing.assert_close(losses["bf16"], losses["fp32"], rtol=0.02, atol=0.0)


def test_mel_cnn_runs_its_convolutions_in_bf16_under_autocast():
    torch.manual_seed(0)
    cnn = MelCNN(40, (8, 16), 12)
    mel, lengths = torch.randn(6, 40, 80), torch.tensor([80, 7, 3, 64, 33, 50])
    full = cnn(mel, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = cnn(mel, lengths)
        half.float().sum().backward()
    assert half.dtype == torch.bfloat16  # the projection, as autocast runs every Linear
    assert all(p.grad.dtype == torch.float32 for p in cnn.parameters())  # weights stay float32
    assert not torch.equal(half.float(), full)
    torch.testing.assert_close(half.float(), full, rtol=0.05, atol=0.05)
