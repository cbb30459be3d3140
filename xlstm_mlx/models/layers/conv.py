"""Official CausalConv1d (components/conv.py): depthwise, causal, with a bias, and a state for decode.

    y_t = bias + sum_{k=0}^{KS-1} w[k] * x_{t-KS+1+k}        (x_s = 0 before the sequence start)

The official module holds torch's conv weight [F, 1, KS]; the loader stores it as w [KS, F]
(w[k] = weight[:, 0, k]) so the last row multiplies the current input.

The state is the last KS-1 inputs ([B, KS-1, F], float32; zeros for a fresh sequence), so prefill
over a sequence and decode step by step see exactly the same windows.

Masked positions (mask False) are skipped, not zeroed: real tokens are compacted in order before the
convolution, so the window of a real token holds the previous real tokens and the state after the
call equals the state of the unpadded sequence, wherever the padding sits.
"""

import mlx.core as mx
import mlx.nn as nn
from xlstm_mlx.errors import UsageError


class CausalConv1d(nn.Module):
    def __init__(self, features: int, kernel_size: int, bias: bool = True):
        super().__init__()
        if kernel_size < 1:
            raise UsageError(f"CausalConv1d needs kernel_size >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.features = features
        self.weight = mx.zeros((kernel_size, features))
        if bias:
            self.bias = mx.zeros((features,))

    def make_state(self, batch_size: int) -> mx.array:
        return mx.zeros((batch_size, self.kernel_size - 1, self.features), mx.float32)

    def _windows(self, xs, T):
        # xs [B, KS-1+T, F]: output t sums KS consecutive inputs ending at xs[KS-1+t]
        w = self.weight.astype(xs.dtype)
        y = xs[:, 0:T] * w[0]
        for k in range(1, self.kernel_size):
            y = y + xs[:, k : k + T] * w[k]
        if "bias" in self:
            y = y + self.bias.astype(xs.dtype)
        return y

    def __call__(self, x, state, mask=None):
        """x [B, T, F], state [B, KS-1, F] -> (y [B, T, F] in x.dtype, new state float32)."""
        B, T, _ = x.shape
        keep = self.kernel_size - 1
        if mask is None:
            xs = mx.concatenate([state.astype(x.dtype), x], axis=1)
            new_state = xs[:, xs.shape[1] - keep :]
            return self._windows(xs, T), new_state.astype(mx.float32)

        # compact the real tokens of each row to the front (stable: in their original order)
        pos = mx.arange(T)
        order = mx.argsort(mx.where(mask, pos, T + pos), axis=1)
        xc = mx.take_along_axis(x, order[..., None], axis=1)
        xs = mx.concatenate([state.astype(x.dtype), xc], axis=1)
        yc = self._windows(xs, T)
        # real token t is the rank_t-th real token of its row; masked positions get any value
        rank = mx.maximum(mx.cumsum(mask.astype(mx.int32), axis=1) - 1, 0)
        y = mx.take_along_axis(yc, rank[..., None], axis=1)
        # new state: the KS-1 entries of xs that end at the last real token
        count = mx.sum(mask.astype(mx.int32), axis=1, keepdims=True)  # [B, 1]
        idx = count + mx.arange(keep)[None, :]
        new_state = mx.take_along_axis(xs, idx[..., None], axis=1)
        return y, new_state.astype(mx.float32)
