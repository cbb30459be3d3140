"""Gradients through our mLSTM kernels and model against the canonical PyTorch implementations.

Kernel level: mlstm_kernels' `chunkwise--native_autograd` (and its native sequence loop for lengths
that are not whole chunks), differentiated by torch autograd, against MLX autodiff through our
chunkwise form. Model level: a whole small model against transformers' xLSTMForCausalLM in train mode.
All float32 on CPU; relative error ||g - g_ref|| / ||g_ref|| <= 1e-4.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
mlstm_native = pytest.importorskip("mlstm_kernels.torch.chunkwise.native")
mlstm_seq = pytest.importorskip("mlstm_kernels.torch.recurrent.native_sequence")

import mlx.core as mx  # noqa: E402

from xlstm_mlx.kernels import mlstm_chunkwise
from xlstm_mlx.kernels import mlstm_chunkwise_ref
from xlstm_mlx.kernels import mlstm_sequence  # noqa: E402

RTOL = 1e-4


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-30))


def random_inputs(seed, B=2, NH=3, T=128, dqk=16, dv=32, with_state=False):
    rng = np.random.default_rng(seed)
    x = {
        "q": rng.standard_normal((B, NH, T, dqk)),
        "k": rng.standard_normal((B, NH, T, dqk)),
        "v": rng.standard_normal((B, NH, T, dv)),
        # spread gates: input gates from strongly negative to positive, forget gates mostly open
        "i": rng.uniform(-6.0, 4.0, (B, NH, T)),
        "f": rng.uniform(-2.0, 8.0, (B, NH, T)),
    }
    if with_state:
        x["C0"] = rng.standard_normal((B, NH, dqk, dv)) * 0.5
        x["n0"] = rng.standard_normal((B, NH, dqk)) * 0.5
        x["m0"] = rng.uniform(-1.0, 1.0, (B, NH, 1))
    # cotangents: random weights on the outputs and on the final state
    w = {
        "h": rng.standard_normal((B, NH, T, dv)),
        "C": rng.standard_normal((B, NH, dqk, dv)),
        "n": rng.standard_normal((B, NH, dqk)),
    }
    return {k_: v_.astype(np.float32) for k_, v_ in x.items()}, {k_: v_.astype(np.float32) for k_, v_ in w.items()}


def torch_grads(fn, x, w, **kw):
    t = {k: torch.tensor(v, requires_grad=True) for k, v in x.items()}
    h, (C, n, _) = fn(
        q=t["q"], k=t["k"], v=t["v"], i=t["i"], f=t["f"],
        c_initial=t.get("C0"), n_initial=t.get("n0"), m_initial=t.get("m0"),
        return_last_states=True, eps=1e-6, **kw,
    )
    loss = (h * torch.tensor(w["h"])).sum() + (C * torch.tensor(w["C"])).sum() + (n * torch.tensor(w["n"])).sum()
    loss.backward()
    return {k: v.grad.numpy() for k, v in t.items()}


def mlx_grads(kernel, x, w, **kw):
    names = list(x)
    wh, wC, wn = (mx.array(w[k]) for k in ("h", "C", "n"))

    def loss(*args):
        a = dict(zip(names, args))
        state = (a["C0"], a["n0"], a["m0"]) if "C0" in a else None
        h, (C, n, _) = kernel(a["q"], a["k"], a["v"], a["i"], a["f"], state=state, eps=1e-6, **kw)
        return (h * wh).sum() + (C * wC).sum() + (n * wn).sum()

    grads = mx.grad(loss, argnums=list(range(len(names))))(*(mx.array(x[k]) for k in names))
    return {k: np.array(g) for k, g in zip(names, grads)}


@pytest.mark.parametrize("seed,with_state", [(0, False), (1, True)])
@pytest.mark.parametrize("kernel", [mlstm_chunkwise, mlstm_chunkwise_ref], ids=["chunkwise", "chunkwise_ref"])
def test_chunkwise_grads_match_native_autograd(kernel, seed, with_state):
    x, w = random_inputs(seed, with_state=with_state)
    ref = torch_grads(mlstm_native.mlstm_chunkwise__native_autograd, x, w, chunk_size=32)
    ours = mlx_grads(kernel, x, w, chunk_size=32)
    for name in x:
        if name == "m0":
            continue  # h and the states do not depend on m0 except through the exp(-m) bound
        err = rel_err(ours[name], ref[name])
        assert err <= RTOL, f"d/d{name}: relative error {err:.2e}"
        assert np.abs(ref[name]).max() > 0, f"d/d{name} is identically zero: the test would not see an error"


@pytest.mark.parametrize("T", [45, 77])
def test_chunkwise_grads_with_remainder_match_native_sequence(T):
    """Lengths that are not whole chunks (whole chunks, then a remainder) against the step loop."""
    x, w = random_inputs(2 + T, B=1, NH=2, T=T, dqk=8, dv=16, with_state=True)
    ref = torch_grads(mlstm_seq.mlstm_recurrent_sequence__native_fw, x, w, dtype_state=torch.float32)
    ours = mlx_grads(mlstm_chunkwise, x, w, chunk_size=16)
    for name in ("q", "k", "v", "i", "f", "C0", "n0"):
        err = rel_err(ours[name], ref[name])
        assert err <= RTOL, f"T={T} d/d{name}: relative error {err:.2e}"


def test_sequence_form_grads_match_chunkwise():
    """Our own forms agree on gradients too (the sequence form is what decode-time state passing uses)."""
    x, w = random_inputs(7, B=1, NH=2, T=40, dqk=8, dv=8, with_state=True)
    a = mlx_grads(mlstm_chunkwise, x, w, chunk_size=16)
    b = mlx_grads(mlstm_sequence, x, w)
    for name in ("q", "k", "v", "i", "f", "C0", "n0"):
        assert rel_err(a[name], b[name]) <= RTOL, name


# ----------------------------------------------------------------------------------------------
# Whole model: transformers' xLSTMForCausalLM in train mode (its native chunkwise autograd kernel)

_HF_TRAIN_GRADS = """
import sys, numpy as np, torch
import transformers.utils as tu, transformers.utils.import_utils as iu
tu.is_xlstm_available = iu.is_xlstm_available = lambda: False   # hide the official package
from transformers import xLSTMForCausalLM
import transformers.models.xlstm.modeling_xlstm as m
assert not m.external_xlstm, "transformers picked up the official xlstm blocks"
path, ids_file, tgt_file, out_file = sys.argv[1:5]
model = xLSTMForCausalLM.from_pretrained(path, dtype=torch.float32)
assert model.config.mode == "train" and model.config.autocast_kernel_dtype == "float32"
model.train()
ids = torch.from_numpy(np.load(ids_file)); tgt = torch.from_numpy(np.load(tgt_file))
logits = model(ids, use_cache=False).logits
loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
loss.backward()
grads = {n: p.grad.numpy() for n, p in model.named_parameters()}
np.savez(out_file, __loss__=loss.detach().numpy(), **grads)
"""


def test_model_grads_match_transformers_train_mode(tmp_path):
    import os
    import subprocess
    import sys

    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from oracles.canonical import make_hf_checkpoint

    from xlstm_mlx import load

    # random weights (gates spread open..shut), chunk 32 over 64 tokens: two chunks with a carried state
    path = make_hf_checkpoint(tmp_path / "ckpt", seed=3, hidden=128, layers=2, heads=2, vocab=97,
                              chunk_size=32, mode="train", autocast_kernel_dtype="float32")
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 97, (2, 64))
    tgt = rng.integers(0, 97, (2, 64))
    np.save(tmp_path / "ids.npy", ids.astype(np.int64))
    np.save(tmp_path / "tgt.npy", tgt.astype(np.int64))
    subprocess.run([sys.executable, "-c", _HF_TRAIN_GRADS, str(path), str(tmp_path / "ids.npy"),
                    str(tmp_path / "tgt.npy"), str(tmp_path / "grads.npz")],
                   check=True, env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2")))
    ref = dict(np.load(tmp_path / "grads.npz"))

    model, _ = load(path, dtype="float32")
    assert model.profile.prefill_kernel == "chunkwise" and model.profile.chunk_size == 32

    def loss_fn(model, x, y):
        return nn.losses.cross_entropy(model(x), y, reduction="mean")

    loss, grads = nn.value_and_grad(model, loss_fn)(model, mx.array(ids.astype(np.int32)), mx.array(tgt.astype(np.int32)))
    grads = dict(tree_flatten(grads))
    assert abs(loss.item() - float(ref.pop("__loss__"))) <= 1e-5 * abs(loss.item())
    assert set(grads) == set(ref), sorted(set(grads) ^ set(ref))
    errs = {name: rel_err(np.array(g), ref[name]) for name, g in grads.items()}
    worst = max(errs, key=errs.get)
    print(f"worst relative gradient error {errs[worst]:.2e} ({worst})")
    assert errs[worst] <= RTOL, f"{worst}: relative error {errs[worst]:.2e}"
