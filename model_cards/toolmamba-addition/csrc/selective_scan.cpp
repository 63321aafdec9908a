// Fused Mamba-1 selective scan for the CPU: forward and backward without materialising the
// (batch, length, d, n) tensors that a vectorised PyTorch version needs.
//
// Inputs (float32, contiguous):  u, delta: (b, d, l) with delta already discretised (softplus + bias);
// A: (d, n); B, C: (b, l, n) (time-major so that one step's n values are adjacent); h0: (b, d, n).
// Forward returns y (b, d, l) = <h[t], C[t]> (no D skip, no gate: PyTorch adds those) and h_last (b, d, n).
//
//     h[t] = exp(delta[t] * A) * h[t-1] + delta[t] * u[t] * B[t]
//
// The backward recomputes the states one (b, d) channel at a time. Work is split over the batch: each
// thread owns dB[b], dC[b] and a private partial dA[b], summed at the end, so there are no races.
// Python's twin: `selective_scan_ref` in selective_scan.py; tests hold them equal.
//
// The same extension also holds `mamba_step`, the fused one-token step of the whole mixer used in decoding
// (see its comment below), so that there is still a single build.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

std::vector<torch::Tensor> selective_scan_forward(torch::Tensor u, torch::Tensor delta, torch::Tensor A,
                                                  torch::Tensor B, torch::Tensor C, torch::Tensor h0) {
  const int64_t nb = u.size(0), nd = u.size(1), nl = u.size(2), nn = A.size(1);
  auto y = torch::empty_like(u);
  auto h_last = torch::empty_like(h0);
  const float *pu = u.data_ptr<float>(), *pdt = delta.data_ptr<float>(), *pA = A.data_ptr<float>();
  const float *pB = B.data_ptr<float>(), *pC = C.data_ptr<float>(), *p0 = h0.data_ptr<float>();
  float *py = y.data_ptr<float>(), *plast = h_last.data_ptr<float>();
  at::parallel_for(0, nb * nd, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> h(nn);
    for (int64_t bd = begin; bd < end; ++bd) {
      const int64_t b = bd / nd, d = bd % nd;
      const float* A_d = pA + d * nn;
      for (int64_t i = 0; i < nn; ++i) h[i] = p0[bd * nn + i];
      for (int64_t t = 0; t < nl; ++t) {
        const float dt = pdt[bd * nl + t], dtu = dt * pu[bd * nl + t];
        const float *B_t = pB + (b * nl + t) * nn, *C_t = pC + (b * nl + t) * nn;
        float acc = 0.f;
        for (int64_t i = 0; i < nn; ++i) {
          h[i] = std::exp(dt * A_d[i]) * h[i] + dtu * B_t[i];
          acc += h[i] * C_t[i];
        }
        py[bd * nl + t] = acc;
      }
      for (int64_t i = 0; i < nn; ++i) plast[bd * nn + i] = h[i];
    }
  });
  return {y, h_last};
}

// Returns (du, ddelta, dA, dB, dC, dh0) given dy (b, d, l) and dh_last (b, d, n).
std::vector<torch::Tensor> selective_scan_backward(torch::Tensor u, torch::Tensor delta, torch::Tensor A,
                                                   torch::Tensor B, torch::Tensor C, torch::Tensor h0,
                                                   torch::Tensor dy, torch::Tensor dh_last) {
  const int64_t nb = u.size(0), nd = u.size(1), nl = u.size(2), nn = A.size(1);
  auto du = torch::empty_like(u), ddelta = torch::empty_like(delta);
  auto dA_partial = torch::zeros({nb, nd, nn}, A.options());
  auto dB = torch::zeros_like(B), dC = torch::zeros_like(C), dh0 = torch::empty_like(h0);
  const float *pu = u.data_ptr<float>(), *pdt = delta.data_ptr<float>(), *pA = A.data_ptr<float>();
  const float *pB = B.data_ptr<float>(), *pC = C.data_ptr<float>(), *p0 = h0.data_ptr<float>();
  const float *pdy = dy.data_ptr<float>(), *pdl = dh_last.data_ptr<float>();
  float *pdu = du.data_ptr<float>(), *pddt = ddelta.data_ptr<float>(), *pdA = dA_partial.data_ptr<float>();
  float *pdB = dB.data_ptr<float>(), *pdC = dC.data_ptr<float>(), *pdh0 = dh0.data_ptr<float>();
  at::parallel_for(0, nb, 1, [&](int64_t b_begin, int64_t b_end) {
    std::vector<float> states((nl + 1) * nn), g(nn);  // states[t + 1] = h[t]; states[0] = h0
    for (int64_t b = b_begin; b < b_end; ++b) {
      for (int64_t d = 0; d < nd; ++d) {
        const int64_t bd = b * nd + d;
        const float* A_d = pA + d * nn;
        float* dA_bd = pdA + bd * nn;
        // Recompute every state of this channel.
        for (int64_t i = 0; i < nn; ++i) states[i] = p0[bd * nn + i];
        for (int64_t t = 0; t < nl; ++t) {
          const float dt = pdt[bd * nl + t], dtu = dt * pu[bd * nl + t];
          const float* B_t = pB + (b * nl + t) * nn;
          const float* prev = &states[t * nn];
          float* cur = &states[(t + 1) * nn];
          for (int64_t i = 0; i < nn; ++i) cur[i] = std::exp(dt * A_d[i]) * prev[i] + dtu * B_t[i];
        }
        // Walk back in time; g is dLoss/dh[t] from everything after step t.
        for (int64_t i = 0; i < nn; ++i) g[i] = pdl[bd * nn + i];
        for (int64_t t = nl - 1; t >= 0; --t) {
          const float dt = pdt[bd * nl + t], ut = pu[bd * nl + t], dyt = pdy[bd * nl + t];
          const float *B_t = pB + (b * nl + t) * nn, *C_t = pC + (b * nl + t) * nn;
          float *dB_t = pdB + (b * nl + t) * nn, *dC_t = pdC + (b * nl + t) * nn;
          const float* prev = &states[t * nn];
          const float* cur = &states[(t + 1) * nn];
          float d_dt = 0.f, d_u = 0.f;
          for (int64_t i = 0; i < nn; ++i) {
            dC_t[i] += dyt * cur[i];
            g[i] += dyt * C_t[i];
            const float a = std::exp(dt * A_d[i]);
            const float da = g[i] * prev[i];  // dLoss/d(exp(dt * A))
            d_dt += da * a * A_d[i] + g[i] * ut * B_t[i];
            dA_bd[i] += da * a * dt;
            d_u += g[i] * dt * B_t[i];
            dB_t[i] += g[i] * dt * ut;
            g[i] *= a;  // on to dLoss/dh[t-1]
          }
          pddt[bd * nl + t] = d_dt;
          pdu[bd * nl + t] = d_u;
        }
        for (int64_t i = 0; i < nn; ++i) pdh0[bd * nn + i] = g[i];
      }
    }
  });
  return {du, ddelta, dA_partial.sum(0), dB, dC, dh0};
}

// ------------------------------------------------------------------------------------------------
// One decoding step of the Mamba-1 mixer: everything `ToolMambaMixer._step` computes between in_proj and
// out_proj, for one token per row. At decoding sizes (d ~ 128, n ~ 16) the arithmetic takes a few
// microseconds; the ~25 small torch ops it replaces cost several microseconds each in dispatch alone.
//
// Inputs (float32): x, z: (b, d), the two halves of in_proj's output (rows may be strided, the d axis must
// be contiguous); conv_state: (b, d, k-1) and ssm_state: (b, d, n), contiguous, updated in place;
// conv_weight: (d, k); conv_bias: (d) or none; x_proj_weight: (r + 2n, d); dt_proj_weight: (d, r);
// dt_proj_bias: (d); A = -exp(A_log): (d, n); D: (d). Returns y: (b, d):
//
//     xc = silu(conv_bias + <conv_weight, [conv_state, x]>)      conv_state <- [conv_state[1:], x]
//     [dt_low, B, C] = x_proj_weight @ xc                         sizes r, n, n
//     dt = softplus(dt_proj_weight @ dt_low + dt_proj_bias)       (d)
//     h = exp(dt * A) * h + dt * xc * B                           ssm_state <- h   (d, n)
//     y = (<h, C> + D * xc) * silu(z)
//
// Rows are independent, so the batch is split over threads, but only in chunks of at least `grain` rows:
// a row is a few microseconds of work and waking threads costs more, so small batches stay on one thread.
// Python's twin: `mamba_step_ref` in mamba_step.py; tests hold them equal.
static inline float silu(float v) { return v / (1.f + std::exp(-v)); }

// torch.nn.functional.softplus with its defaults (beta 1, threshold 20): linear above the threshold.
static inline float softplus(float v) { return v > 20.f ? v : std::log1p(std::exp(v)); }

// The cached states are written through raw pointers, which autograd does not see: bump their version
// counters as copy_ would, so that a graph that saved one of them still notices the change. Inference
// tensors have no version counter.
static void mark_modified(const torch::Tensor& t) {
  if (!t.is_inference()) torch::autograd::impl::bump_version(t);
}

torch::Tensor mamba_step(torch::Tensor x, torch::Tensor z, torch::Tensor conv_state, torch::Tensor conv_weight,
                         std::optional<torch::Tensor> conv_bias, torch::Tensor x_proj_weight,
                         torch::Tensor dt_proj_weight, torch::Tensor dt_proj_bias, torch::Tensor A, torch::Tensor D,
                         torch::Tensor ssm_state) {
  const int64_t nb = x.size(0), nd = x.size(1), nk = conv_weight.size(1), nr = dt_proj_weight.size(1),
                nn = A.size(1);
  for (const auto* t : {&x, &z, &conv_state, &conv_weight, &x_proj_weight, &dt_proj_weight, &dt_proj_bias, &A, &D,
                        &ssm_state}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == torch::kFloat, "mamba_step: CPU float32 tensors only");
  }
  TORCH_CHECK(conv_state.is_contiguous() && ssm_state.is_contiguous(), "mamba_step: the states must be contiguous");
  TORCH_CHECK(nk >= 2, "mamba_step: the conv kernel needs a width of at least 2 (a state of k-1 >= 1 inputs)");
  TORCH_CHECK(z.sizes() == x.sizes() && conv_state.sizes() == torch::IntArrayRef({nb, nd, nk - 1}) &&
                  ssm_state.sizes() == torch::IntArrayRef({nb, nd, nn}) && A.size(0) == nd &&
                  x_proj_weight.sizes() == torch::IntArrayRef({nr + 2 * nn, nd}) && dt_proj_weight.size(0) == nd &&
                  conv_weight.size(0) == nd && dt_proj_bias.numel() == nd && D.numel() == nd,
              "mamba_step: inconsistent shapes");
  // The read-only inputs: contiguous() returns the tensor itself when it already is (the usual case).
  if (x.stride(1) != 1) x = x.contiguous();
  if (z.stride(1) != 1) z = z.contiguous();
  conv_weight = conv_weight.contiguous();
  x_proj_weight = x_proj_weight.contiguous();
  dt_proj_weight = dt_proj_weight.contiguous();
  dt_proj_bias = dt_proj_bias.contiguous();
  A = A.contiguous();
  D = D.contiguous();
  torch::Tensor bias;
  if (conv_bias.has_value()) {
    bias = conv_bias->contiguous();
    TORCH_CHECK(bias.device().is_cpu() && bias.scalar_type() == torch::kFloat && bias.numel() == nd,
                "mamba_step: conv_bias must be a CPU float32 tensor of d values");
  }
  auto y = torch::empty({nb, nd}, x.options());

  const int64_t x_stride = x.stride(0), z_stride = z.stride(0), nx = nr + 2 * nn;  // nx: x_proj's outputs
  const float *px = x.data_ptr<float>(), *pz = z.data_ptr<float>(), *pw = conv_weight.data_ptr<float>();
  const float* pbias = bias.defined() ? bias.data_ptr<float>() : nullptr;
  const float *pWx = x_proj_weight.data_ptr<float>(), *pWdt = dt_proj_weight.data_ptr<float>();
  const float *pbdt = dt_proj_bias.data_ptr<float>(), *pA = A.data_ptr<float>(), *pD = D.data_ptr<float>();
  float *pconv = conv_state.data_ptr<float>(), *pssm = ssm_state.data_ptr<float>(), *py = y.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, nd * nn));  // rows per thread, at least

  at::parallel_for(0, nb, grain, [&](int64_t b_begin, int64_t b_end) {
    // This row's conv output, Δ, silu(z) and x_proj's output [dt_low, B, C].
    std::vector<float> xc_buf(nd), dt_buf(nd), gate_buf(nd), x_dbl_buf(nx);
    float *xc = xc_buf.data(), *dt = dt_buf.data(), *gate = gate_buf.data(), *x_dbl = x_dbl_buf.data();
    for (int64_t b = b_begin; b < b_end; ++b) {
      const float *x_b = px + b * x_stride, *z_b = pz + b * z_stride;
      float* conv_b = pconv + b * nd * (nk - 1);

      // 1. Causal conv over the window [conv_state, x], then shift x into the state. The activations
      //    (here and below) are separate loops over d so that their exp / log1p vectorise (libmvec):
      //    as scalar calls inside the other loops they took half of the step's time.
      for (int64_t c = 0; c < nd; ++c) {
        float* s = conv_b + c * (nk - 1);  // the last k-1 inputs of channel c, oldest first
        const float* w = pw + c * nk;
        float acc = 0.f;
        for (int64_t j = 0; j < nk - 1; ++j) acc += w[j] * s[j];
        acc += w[nk - 1] * x_b[c];
        for (int64_t j = 0; j + 1 < nk - 1; ++j) s[j] = s[j + 1];
        s[nk - 2] = x_b[c];
        xc[c] = pbias ? acc + pbias[c] : acc;
      }
      for (int64_t c = 0; c < nd; ++c) xc[c] = silu(xc[c]);
      for (int64_t c = 0; c < nd; ++c) gate[c] = silu(z_b[c]);

      // 2. x_proj: one dot product over d per output (row-major weight: contiguous, vectorisable).
      for (int64_t o = 0; o < nx; ++o) {
        const float* w = pWx + o * nd;
        float acc = 0.f;
        for (int64_t c = 0; c < nd; ++c) acc += w[c] * xc[c];
        x_dbl[o] = acc;
      }
      const float *B = x_dbl + nr, *C = x_dbl + nr + nn;

      // 3. Δ = softplus(dt_proj(dt_low) + bias): r is small (d / 16), so the inner loop is short.
      for (int64_t c = 0; c < nd; ++c) {
        const float* w = pWdt + c * nr;
        float acc = 0.f;
        for (int64_t i = 0; i < nr; ++i) acc += w[i] * x_dbl[i];
        dt[c] = acc + pbdt[c];
      }
      for (int64_t c = 0; c < nd; ++c) dt[c] = softplus(dt[c]);

      // 4. The SSM recurrence, the D skip and the gate; the inner loop over n is the vectorised one.
      for (int64_t c = 0; c < nd; ++c) {
        float* h = pssm + (b * nd + c) * nn;
        const float* A_c = pA + c * nn;
        const float dt_c = dt[c], dtx = dt_c * xc[c];
        float acc = 0.f;
        for (int64_t i = 0; i < nn; ++i) {
          h[i] = std::exp(dt_c * A_c[i]) * h[i] + dtx * B[i];
          acc += h[i] * C[i];
        }
        py[b * nd + c] = (acc + pD[c] * xc[c]) * gate[c];
      }
    }
  });
  mark_modified(conv_state);
  mark_modified(ssm_state);
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &selective_scan_forward, "fused selective scan forward (CPU)");
  m.def("backward", &selective_scan_backward, "fused selective scan backward (CPU)");
  m.def("mamba_step", &mamba_step, "fused one-token Mamba mixer step, states updated in place (CPU)");
}
