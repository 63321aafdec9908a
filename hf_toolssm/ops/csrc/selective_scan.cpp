// Fused Mamba-1 selective scan for the CPU: forward and backward without materialising the
// (batch, length, d, n) tensors that a vectorised PyTorch version needs.
//
// Inputs (float32, contiguous):  u, delta: (b, d, l) with delta already discretised (softplus + bias);
// A: (d, n); B, C: (b, l, n) (time-major so that one step's n values are adjacent); h0: (b, d, n).
// Forward returns y (b, d, l) = <h[t], C[t]> (no D skip, no gate: PyTorch adds those) and h_last (b, d, n).
//
//     h[t] = a[t] * h[t-1] + delta[t] * u[t] * B[t],      a[t] = exp(delta[t] * A)  (the decays)
//
// Forward: one (b, d) channel at a time (threads split the b x d channels), through time in blocks of kBlock
// steps: the block's decays in one loop, then the recurrence. (Walking a group of channels through each block
// together, so that they share the block's B and C rows in L1, measured ~10% slower: short strides through
// u, delta and y defeat the prefetcher.)
//
// Backward: each thread owns whole batch rows (dB[b], dC[b] and a private partial dA[b], summed at the end),
// so there are no races and the bits do not depend on the number of threads. Per (b, d) channel:
//   1. every decay a[t] (the only exps) and state h[t] again, into per-thread (l, n) buffers;
//   2. back in time, with g = dLoss/dh[t] (y[t]'s share dy[t] C[t] included) and w = g a[t] h[t-1]
//      (dLoss/da[t] times a[t]):
//        dLoss/dh[t-1] = g a[t]      ddelta[t] = <w, A> + u[t] <g, B[t]>      du[t] = delta[t] <g, B[t]>
//        dA += delta[t] w            dB[t] += delta[t] u[t] g                 dC[t] += dy[t] h[t]
//      elementwise work over n and two dot products per step, with nothing else in the loop.
// Keeping the decays from pass 1 saves the second exp per element. The old backward did both passes' work in
// one inner loop per step, exp included, whose scalar reductions and stores through pointers that might alias
// kept it from vectorising at all; this one is 7-8x faster and costs ~1.8x the forward instead of 7.5-9x
// (b 8, d 128, l 5608 and b 64, l 220, n 16, one thread; the forward itself got 1.7-1.9x faster).
//
// Everything is written twice: for n = 16 (every Mamba we train) in 8-float vectors that keep a channel's
// state, gradient and A in registers, and in plain loops for any n. Plain loops over a compile-time 16 came
// out scalar (unrolled before the vectoriser saw them); over a run-time n they vectorise but keep h and g in
// memory. exp is our own inline one (exp_inline, below) rather than libmvec's.
//
// Python's twin: `selective_scan_ref` in selective_scan.py; tests hold them equal.
//
// The same extension also holds `mamba_step`, the fused one-token step of the whole mixer used in decoding
// (see its comment below), so that there is still a single build.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

namespace {

constexpr int64_t kBlock = 64;  // forward time steps per block: 64 steps x 16 states x 4 bytes = 4 KiB

// Eight floats in one register (AVX; two SSE or NEON registers elsewhere): the GCC / Clang vector extension.
typedef float f8 __attribute__((vector_size(32)));
typedef float f4 __attribute__((vector_size(16)));
constexpr int64_t kLanes = 8;

inline f8 load8(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float* p, f8 v) { std::memcpy(p, &v, sizeof v); }
inline float hsum8(f8 v) {  // the sum of the lanes, pairwise
  f4 lo, hi;
  std::memcpy(&lo, &v, sizeof lo);
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
  const f4 s = lo + hi;
  return (s[0] + s[2]) + (s[1] + s[3]);
}

// x - n c, rounded once (an FMA). As two plain steps, -ffast-math merged exp_inline's two reduction steps
// into one product with a rounded ln2 (measured: up to 4.3 ulp instead of 1.2 near x = -80). Without FMA
// hardware std::fma is a slow library call, so there we take that risk.
inline float minus_product(float x, float n, float c) {
#if defined(__FMA__) || defined(__aarch64__)
  return std::fma(-n, c, x);
#else
  return x - n * c;
#endif
}

// exp(x) inline, so that the loops of exps vectorise without calls: libmvec's expf (a call per 8 values)
// took over half of the forward; this one is ~1.4x faster and more accurate (max 1.2 ulp over [-87, 10],
// libmvec's 2.6). Cephes' expf: x = k ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, so r is exact), a
// polynomial for exp(r), times 2^k built in the exponent bits. Below -87.34 (where exp(x) < FLT_MIN, a
// denormal that -ffast-math flushes anyway) the result is 0; x is clamped at 88 (no overflow to inf).
inline float exp_inline(float x) {
  x = std::min(x, 88.f);
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = minus_product(minus_product(x, k, 0.693359375f), k, -2.12194440e-4f);
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float exp_r = p * (r * r) + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(std::max(k, -126.f)) + 127) << 23;
  float two_k;
  std::memcpy(&two_k, &bits, sizeof two_k);
  return x < -87.33654f ? 0.f : exp_r * two_k;
}

// decay[s n + i] = exp(dt[s] A[i]) for s < steps: the products first, then one flat loop of exps.
inline void decays(float* __restrict__ decay, const float* __restrict__ dt, const float* __restrict__ A_d,
                   int64_t steps, int64_t nn) {
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t i = 0; i < nn; ++i) decay[s * nn + i] = dt[s] * A_d[i];
  }
  for (int64_t k = 0; k < steps * nn; ++k) decay[k] = exp_inline(decay[k]);
}

// The same for n = 8 NV, the products as whole vectors (a plain loop over a compile-time n was vectorised
// across steps instead, with transposes).
template <int NV>
inline void decays_vec(float* __restrict__ decay, const float* __restrict__ dt, const f8* A_d, int64_t steps) {
  for (int64_t s = 0; s < steps; ++s) {
    for (int j = 0; j < NV; ++j) store8(decay + (s * NV + j) * kLanes, dt[s] * A_d[j]);
  }
  for (int64_t k = 0; k < steps * NV * kLanes; ++k) decay[k] = exp_inline(decay[k]);
}

// ---- Forward: one (b, d) channel. u, dt, y: its (l) rows; A_d, h0, h_last: its (n) rows; B, C: its batch row's
// (l, n) rows; a: scratch (kBlock, n).

template <int NV>  // n = 8 NV
void forward_channel_vec(const float* __restrict__ u, const float* __restrict__ dt, const float* __restrict__ A_d,
                         const float* __restrict__ B, const float* __restrict__ C, const float* __restrict__ h0,
                         float* __restrict__ y, float* __restrict__ h_last, float* __restrict__ a, int64_t nl) {
  constexpr int64_t nn = NV * kLanes;
  f8 h[NV], Av[NV];
  for (int j = 0; j < NV; ++j) {
    h[j] = load8(h0 + j * kLanes);
    Av[j] = load8(A_d + j * kLanes);
  }
  for (int64_t t0 = 0; t0 < nl; t0 += kBlock) {
    const int64_t steps = std::min(kBlock, nl - t0);
    decays_vec<NV>(a, dt + t0, Av, steps);
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = t0 + s;
      const float dtu = dt[t] * u[t];
      f8 acc = {};
      for (int j = 0; j < NV; ++j) {
        h[j] = load8(a + s * nn + j * kLanes) * h[j] + dtu * load8(B + t * nn + j * kLanes);
        acc += h[j] * load8(C + t * nn + j * kLanes);
      }
      y[t] = hsum8(acc);
    }
  }
  for (int j = 0; j < NV; ++j) store8(h_last + j * kLanes, h[j]);
}

void forward_channel(const float* __restrict__ u, const float* __restrict__ dt, const float* __restrict__ A_d,
                     const float* __restrict__ B, const float* __restrict__ C, const float* __restrict__ h0,
                     float* __restrict__ y, float* __restrict__ h_last, float* __restrict__ a, int64_t nl,
                     int64_t nn) {
  float* __restrict__ h = h_last;  // the running state
  for (int64_t i = 0; i < nn; ++i) h[i] = h0[i];
  for (int64_t t0 = 0; t0 < nl; t0 += kBlock) {
    const int64_t steps = std::min(kBlock, nl - t0);
    decays(a, dt + t0, A_d, steps, nn);
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = t0 + s;
      const float dtu = dt[t] * u[t];
      float acc = 0.f;
      for (int64_t i = 0; i < nn; ++i) {
        h[i] = a[s * nn + i] * h[i] + dtu * B[t * nn + i];
        acc += h[i] * C[t * nn + i];
      }
      y[t] = acc;
    }
  }
}

// ---- Backward: one (b, d) channel, passes 1 and 2 of the header. Pointers are the channel's: u, dt, dy, du,
// ddt: its (l) rows; h0, dh_last, dh0, dA: its (n) rows; B, C, dB, dC: its batch row's (l, n) rows.
// states ((l + 1) n: states[t + 1] = h[t], states[0] = h0) and decay (l n) are the thread's scratch.

template <int NV>  // n = 8 NV
void backward_channel_vec(const float* __restrict__ u, const float* __restrict__ dt, const float* __restrict__ A_d,
                          const float* __restrict__ B, const float* __restrict__ C, const float* __restrict__ h0,
                          const float* __restrict__ dy, const float* __restrict__ dh_last, float* __restrict__ du,
                          float* __restrict__ ddt, float* __restrict__ dA, float* __restrict__ dB,
                          float* __restrict__ dC, float* __restrict__ dh0, float* __restrict__ states,
                          float* __restrict__ decay, int64_t nl) {
  constexpr int64_t nn = NV * kLanes;
  f8 h[NV], Av[NV];
  for (int j = 0; j < NV; ++j) {
    h[j] = load8(h0 + j * kLanes);
    Av[j] = load8(A_d + j * kLanes);
    store8(states + j * kLanes, h[j]);
  }
  decays_vec<NV>(decay, dt, Av, nl);
  for (int64_t t = 0; t < nl; ++t) {
    const float dtu = dt[t] * u[t];
    for (int j = 0; j < NV; ++j) {
      const int64_t o = t * nn + j * kLanes;
      h[j] = load8(decay + o) * h[j] + dtu * load8(B + o);
      store8(states + nn + o, h[j]);
    }
  }
  f8 g[NV], dA_acc[NV];
  for (int j = 0; j < NV; ++j) {
    g[j] = load8(dh_last + j * kLanes);
    dA_acc[j] = f8{};
  }
  for (int64_t t = nl - 1; t >= 0; --t) {
    const float dt_t = dt[t], u_t = u[t], dy_t = dy[t], dtu = dt_t * u_t;
    f8 w_A = {}, g_B = {};  // the two dot products, lane by lane
    for (int j = 0; j < NV; ++j) {
      const int64_t o = t * nn + j * kLanes;  // step t's row; its h[t-1] is states + o, its h[t] states + nn + o
      const f8 gi = g[j] + dy_t * load8(C + o);
      const f8 ga = gi * load8(decay + o);
      const f8 w = ga * load8(states + o);
      w_A += w * Av[j];
      g_B += gi * load8(B + o);
      dA_acc[j] += dt_t * w;
      store8(dB + o, load8(dB + o) + dtu * gi);
      store8(dC + o, load8(dC + o) + dy_t * load8(states + nn + o));
      g[j] = ga;
    }
    const float gB = hsum8(g_B);
    ddt[t] = hsum8(w_A) + u_t * gB;
    du[t] = dt_t * gB;
  }
  for (int j = 0; j < NV; ++j) {
    store8(dh0 + j * kLanes, g[j]);
    store8(dA + j * kLanes, dA_acc[j]);
  }
}

void backward_channel(const float* __restrict__ u, const float* __restrict__ dt, const float* __restrict__ A_d,
                      const float* __restrict__ B, const float* __restrict__ C, const float* __restrict__ h0,
                      const float* __restrict__ dy, const float* __restrict__ dh_last, float* __restrict__ du,
                      float* __restrict__ ddt, float* __restrict__ dA, float* __restrict__ dB,
                      float* __restrict__ dC, float* __restrict__ dh0, float* __restrict__ states,
                      float* __restrict__ decay, int64_t nl, int64_t nn) {
  decays(decay, dt, A_d, nl, nn);
  for (int64_t i = 0; i < nn; ++i) states[i] = h0[i];
  for (int64_t t = 0; t < nl; ++t) {
    const float dtu = dt[t] * u[t];
    for (int64_t i = 0; i < nn; ++i) {
      states[(t + 1) * nn + i] = decay[t * nn + i] * states[t * nn + i] + dtu * B[t * nn + i];
    }
  }
  // g and the dA accumulator live in dh0 and dA themselves: both are this channel's rows only.
  float* __restrict__ g = dh0;
  for (int64_t i = 0; i < nn; ++i) {
    g[i] = dh_last[i];
    dA[i] = 0.f;
  }
  for (int64_t t = nl - 1; t >= 0; --t) {
    const float dt_t = dt[t], u_t = u[t], dy_t = dy[t], dtu = dt_t * u_t;
    const int64_t o = t * nn;
    float w_A = 0.f, g_B = 0.f;
    for (int64_t i = 0; i < nn; ++i) {
      const float gi = g[i] + dy_t * C[o + i];
      const float ga = gi * decay[o + i];
      const float w = ga * states[o + i];
      w_A += w * A_d[i];
      g_B += gi * B[o + i];
      dA[i] += dt_t * w;
      dB[o + i] += dtu * gi;
      dC[o + i] += dy_t * states[nn + o + i];
      g[i] = ga;
    }
    ddt[t] = w_A + u_t * g_B;
    du[t] = dt_t * g_B;
  }
}

}  // namespace

std::vector<torch::Tensor> selective_scan_forward(torch::Tensor u, torch::Tensor delta, torch::Tensor A,
                                                  torch::Tensor B, torch::Tensor C, torch::Tensor h0) {
  const int64_t nb = u.size(0), nd = u.size(1), nl = u.size(2), nn = A.size(1);
  auto y = torch::empty_like(u);
  auto h_last = torch::empty_like(h0);
  const float *pu = u.data_ptr<float>(), *pdt = delta.data_ptr<float>(), *pA = A.data_ptr<float>();
  const float *pB = B.data_ptr<float>(), *pC = C.data_ptr<float>(), *p0 = h0.data_ptr<float>();
  float *py = y.data_ptr<float>(), *plast = h_last.data_ptr<float>();
  at::parallel_for(0, nb * nd, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> a(kBlock * nn);
    for (int64_t bd = begin; bd < end; ++bd) {
      const int64_t b = bd / nd, d = bd % nd, row = bd * nl, ln = b * nl * nn, bdn = bd * nn;
      if (nn == 16) {
        forward_channel_vec<2>(pu + row, pdt + row, pA + d * nn, pB + ln, pC + ln, p0 + bdn, py + row, plast + bdn,
                               a.data(), nl);
      } else {
        forward_channel(pu + row, pdt + row, pA + d * nn, pB + ln, pC + ln, p0 + bdn, py + row, plast + bdn,
                        a.data(), nl, nn);
      }
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
  auto dA_partial = torch::empty({nb, nd, nn}, A.options());
  auto dB = torch::zeros_like(B), dC = torch::zeros_like(C), dh0 = torch::empty_like(h0);
  const float *pu = u.data_ptr<float>(), *pdt = delta.data_ptr<float>(), *pA = A.data_ptr<float>();
  const float *pB = B.data_ptr<float>(), *pC = C.data_ptr<float>(), *p0 = h0.data_ptr<float>();
  const float *pdy = dy.data_ptr<float>(), *pdl = dh_last.data_ptr<float>();
  float *pdu = du.data_ptr<float>(), *pddt = ddelta.data_ptr<float>(), *pdA = dA_partial.data_ptr<float>();
  float *pdB = dB.data_ptr<float>(), *pdC = dC.data_ptr<float>(), *pdh0 = dh0.data_ptr<float>();
  at::parallel_for(0, nb, 1, [&](int64_t b_begin, int64_t b_end) {
    std::vector<float> states((nl + 1) * nn), decay(nl * nn);
    for (int64_t b = b_begin; b < b_end; ++b) {
      const int64_t ln = b * nl * nn;  // the batch row's (l, n) rows
      for (int64_t d = 0; d < nd; ++d) {
        const int64_t bd = b * nd + d, row = bd * nl, bdn = bd * nn;
        if (nn == 16) {
          backward_channel_vec<2>(pu + row, pdt + row, pA + d * nn, pB + ln, pC + ln, p0 + bdn, pdy + row, pdl + bdn,
                                  pdu + row, pddt + row, pdA + bdn, pdB + ln, pdC + ln, pdh0 + bdn, states.data(),
                                  decay.data(), nl);
        } else {
          backward_channel(pu + row, pdt + row, pA + d * nn, pB + ln, pC + ln, p0 + bdn, pdy + row, pdl + bdn,
                           pdu + row, pddt + row, pdA + bdn, pdB + ln, pdC + ln, pdh0 + bdn, states.data(),
                           decay.data(), nl, nn);
        }
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
