// Fused CPU kernels of the batched engine: one training step (forward, loss, backward) or one
// evaluation forward of K independent MLP members, each member end to end in cache.
//
// Why: for the networks of the notebooks (widths 2-784, batches of 64-100) the stacked torch
// step is bound by per-operation overhead and by passes over [K, F, B] activations larger than
// the cache; here each member's activations (a few KiB) stay in L1/L2 from its forward pass to
// its backward pass, and the small products are register-blocked loops.
//
// What is computed is exactly what bench/batched.py's torch step computes (and so the
// reference engine): tests/test_native.py holds the two to 1e-9 in float64. The layer table,
// the flat parameter layout ([K, ...] blocks, member k of a parameter at offset + k * numel)
// and the losses follow bench/models.py and bench/losses.py. Compiled and loaded by
// bench/native.py; plain C ABI (no Python or torch headers), so it builds in about a second.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

enum Op : int64_t { OP_LINEAR = 0, OP_ACT = 1, OP_BN = 2 };
enum Act : int64_t { ACT_RELU = 0, ACT_TANH = 1, ACT_SIGMOID = 2, ACT_IDENTITY = 3, ACT_SOFTMAX = 4 };
enum Loss : int64_t { LOSS_MSE = 0, LOSS_BCE = 1, LOSS_CE = 2 };

constexpr double BN_MOMENTUM = 0.1;
constexpr double BN_EPS = 1e-5;
constexpr int64_t EVAL_BLOCK = 256;  // examples per evaluation block
constexpr int64_t ROW = 8;           // columns of one layer-table row (see bench/native.py)
constexpr int64_t WIDE_INPUT = 32;
   // from this input width on, the first layer reads input rows

// One row of the layer table.
struct Layer {
    int64_t op, fin, fout, off_w, off_b, act;
    void* rm;  // BatchNorm running mean [K, F] (op == OP_BN)
    void* rv;  // BatchNorm running variance [K, F]
};

inline int64_t round_up(int64_t n, int64_t v) { return (n + v - 1) / v * v; }

// The widest vector the target CPU has registers for: 64 bytes (a zmm register) under AVX-512,
// 32 (ymm) under AVX/AVX2, else 16 (SSE, NEON). A wider vector than the registers makes GCC
// split every operation and spill the blocked loops' accumulators to the stack: on an AVX2-only
// CPU (AMD Zen 3) 64-byte vectors made the step 3.2x slower than the torch step (see
// docs/PERFORMANCE.md). Named vector variables, unlike local arrays, are kept in registers by
// the compiler, which is what makes the blocked loops below fast.
#if defined(__AVX512F__)
constexpr int VEC_BYTES = 64;
#elif defined(__AVX__)
constexpr int VEC_BYTES = 32;
#else
constexpr int VEC_BYTES = 16;
#endif

template <typename T>
struct Vec {
    typedef T type __attribute__((vector_size(VEC_BYTES)));
    static constexpr int lanes = VEC_BYTES / sizeof(T);
};

template <typename T>
inline typename Vec<T>::type load(const T* p) {
    typename Vec<T>::type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

template <typename T>
inline void store(T* p, typename Vec<T>::type v) { std::memcpy(p, &v, sizeof(v)); }

template <typename T>
inline T lane_sum(typename Vec<T>::type v) {
    T t[Vec<T>::lanes];
    std::memcpy(t, &v, sizeof(v));
    for (int w = Vec<T>::lanes / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; ++l) t[l] += t[l + w];
    return t[0];
}

// out[j] = the lane sum of acc[j], j < 16. For float under GCC with 64- or 32-byte vectors, the
// 16 vectors are summed together by halving shuffles (each level halves the partial sums per
// output and packs two vectors into one: 30 shuffles and 15 adds for all 16 at 64 bytes,
// instead of 16 serial lane sums).
template <typename T>
inline void sum16(const typename Vec<T>::type* acc, T* out) {
    for (int j = 0; j < 16; ++j) out[j] = lane_sum<T>(acc[j]);
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
template <>
inline void sum16<float>(const Vec<float>::type* acc, float* out) {
    using VT = Vec<float>::type;
    typedef int32_t VI __attribute__((vector_size(64)));
    const VI lo1 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const VI hi1 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    const VI lo2 = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
    const VI hi2 = {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};
    const VI lo3 = {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29};
    const VI hi3 = {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31};
    const VI lo4 = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    const VI hi4 = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
    VT t[8], u[4], w[2];
    for (int p = 0; p < 8; ++p)
        t[p] = __builtin_shuffle(acc[2 * p], acc[2 * p + 1], lo1)
               + __builtin_shuffle(acc[2 * p], acc[2 * p + 1], hi1);
    for (int q = 0; q < 4; ++q)
        u[q] = __builtin_shuffle(t[2 * q], t[2 * q + 1], lo2)
               + __builtin_shuffle(t[2 * q], t[2 * q + 1], hi2);
    for (int r = 0; r < 2; ++r)
        w[r] = __builtin_shuffle(u[2 * r], u[2 * r + 1], lo3)
               + __builtin_shuffle(u[2 * r], u[2 * r + 1], hi3);
    const VT x = __builtin_shuffle(w[0], w[1], lo4) + __builtin_shuffle(w[0], w[1], hi4);
    std::memcpy(out, &x, sizeof(x));
}
#elif defined(__GNUC__) && !defined(__clang__) && defined(__AVX__)
template <>
inline void sum16<float>(const Vec<float>::type* acc, float* out) {
    using VT = Vec<float>::type;
    typedef int32_t VI __attribute__((vector_size(32)));
    const VI lo1 = {0, 1, 2, 3, 8, 9, 10, 11};
    const VI hi1 = {4, 5, 6, 7, 12, 13, 14, 15};
    const VI lo2 = {0, 1, 4, 5, 8, 9, 12, 13};
    const VI hi2 = {2, 3, 6, 7, 10, 11, 14, 15};
    const VI lo3 = {0, 2, 4, 6, 8, 10, 12, 14};
    const VI hi3 = {1, 3, 5, 7, 9, 11, 13, 15};
    VT t[8], u[4];
    for (int p = 0; p < 8; ++p)
        t[p] = __builtin_shuffle(acc[2 * p], acc[2 * p + 1], lo1)
               + __builtin_shuffle(acc[2 * p], acc[2 * p + 1], hi1);
    for (int q = 0; q < 4; ++q)
        u[q] = __builtin_shuffle(t[2 * q], t[2 * q + 1], lo2)
               + __builtin_shuffle(t[2 * q], t[2 * q + 1], hi2);
    for (int r = 0; r < 2; ++r) {
        const VT w = __builtin_shuffle(u[2 * r], u[2 * r + 1], lo3)
                     + __builtin_shuffle(u[2 * r], u[2 * r + 1], hi3);
        std::memcpy(out + 8 * r, &w, sizeof(w));
    }
}
#endif

// C[M, N] (=, or += when accumulate) A[M, Kd] @ B[Kd, N]; A(m, k) = A[m * sam + k * sak],
// B row-major with leading dimension ldb, C with ldc. N must be a multiple of the vector width
// (buffers are padded so). Blocks of 4 rows x 2 vectors keep 8 accumulators in registers
// across the whole Kd loop; each step loads 2 vectors and 4 scalars for 8 FMAs.
template <typename T>
void gemm(int64_t M, int64_t N, int64_t Kd, const T* A, int64_t sam, int64_t sak, const T* B,
          int64_t ldb, T* C, int64_t ldc, bool accumulate) {
    using VT = typename Vec<T>::type;
    constexpr int V = Vec<T>::lanes;
    auto init = [&](const T* c) { return accumulate ? load(c) : VT{}; };
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) {
        const T* a0 = A + m * sam;
        const T* a1 = a0 + sam;
        const T* a2 = a1 + sam;
        const T* a3 = a2 + sam;
        T* c0 = C + m * ldc;
        T* c1 = c0 + ldc;
        T* c2 = c1 + ldc;
        T* c3 = c2 + ldc;
        int64_t j = 0;
        for (; j + 2 * V <= N; j += 2 * V) {
            VT x0 = init(c0 + j), y0 = init(c0 + j + V), x1 = init(c1 + j), y1 = init(c1 + j + V);
            VT x2 = init(c2 + j), y2 = init(c2 + j + V), x3 = init(c3 + j), y3 = init(c3 + j + V);
            for (int64_t k = 0; k < Kd; ++k) {
                const VT b0 = load(B + k * ldb + j), b1 = load(B + k * ldb + j + V);
                const T s0 = a0[k * sak], s1 = a1[k * sak], s2 = a2[k * sak], s3 = a3[k * sak];
                x0 += s0 * b0; y0 += s0 * b1;
                x1 += s1 * b0; y1 += s1 * b1;
                x2 += s2 * b0; y2 += s2 * b1;
                x3 += s3 * b0; y3 += s3 * b1;
            }
            store(c0 + j, x0); store(c0 + j + V, y0); store(c1 + j, x1); store(c1 + j + V, y1);
            store(c2 + j, x2); store(c2 + j + V, y2); store(c3 + j, x3); store(c3 + j + V, y3);
        }
        for (; j < N; j += V) {
            VT x0 = init(c0 + j), x1 = init(c1 + j), x2 = init(c2 + j), x3 = init(c3 + j);
            for (int64_t k = 0; k < Kd; ++k) {
                const VT b0 = load(B + k * ldb + j);
                x0 += a0[k * sak] * b0;
                x1 += a1[k * sak] * b0;
                x2 += a2[k * sak] * b0;
                x3 += a3[k * sak] * b0;
            }
            store(c0 + j, x0); store(c1 + j, x1); store(c2 + j, x2); store(c3 + j, x3);
        }
    }
    for (; m < M; ++m) {
        const T* a0 = A + m * sam;
        T* c0 = C + m * ldc;
        for (int64_t j = 0; j < N; j += V) {
            VT x0 = init(c0 + j);
            for (int64_t k = 0; k < Kd; ++k) x0 += a0[k * sak] * load(B + k * ldb + j);
            store(c0 + j, x0);
        }
    }
}

// C[M, N] = A[M, L] . B[N, L]^T: M * N dot products of rows of A with rows of B, each over the
// first L elements. Blocks of 4 x 4 products share their vector loads (8 loads for 16 FMAs),
// with the 16 accumulators in registers (AVX-512 has 32 vector registers; with AVX2's 16 a few
// spill); used where both operands are stored along L: the weight gradient g h^T of
// feature-major [F, np] buffers, and a wide first layer on input rows.
template <typename T>
inline void dots_4x4(int64_t L, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                     int64_t ldc) {
    using VT = typename Vec<T>::type;
    constexpr int V = Vec<T>::lanes;
    const int64_t Lv = L / V * V;
    const T *a0 = A, *a1 = A + lda, *a2 = A + 2 * lda, *a3 = A + 3 * lda;
    const T *b0 = B, *b1 = B + ldb, *b2 = B + 2 * ldb, *b3 = B + 3 * ldb;
    VT c00{}, c01{}, c02{}, c03{}, c10{}, c11{}, c12{}, c13{};
    VT c20{}, c21{}, c22{}, c23{}, c30{}, c31{}, c32{}, c33{};
    for (int64_t l = 0; l < Lv; l += V) {
        const VT u0 = load(b0 + l), u1 = load(b1 + l), u2 = load(b2 + l), u3 = load(b3 + l);
        VT a = load(a0 + l);
        c00 += a * u0; c01 += a * u1; c02 += a * u2; c03 += a * u3;
        a = load(a1 + l);
        c10 += a * u0; c11 += a * u1; c12 += a * u2; c13 += a * u3;
        a = load(a2 + l);
        c20 += a * u0; c21 += a * u1; c22 += a * u2; c23 += a * u3;
        a = load(a3 + l);
        c30 += a * u0; c31 += a * u1; c32 += a * u2; c33 += a * u3;
    }
    const VT acc[16] = {c00, c01, c02, c03, c10, c11, c12, c13,
                        c20, c21, c22, c23, c30, c31, c32, c33};
    T sums[16];
    sum16<T>(acc, sums);
    const T* as[4] = {a0, a1, a2, a3};
    const T* bs[4] = {b0, b1, b2, b3};
    for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) {
            T s = sums[r * 4 + c];
            for (int64_t l = Lv; l < L; ++l) s += as[r][l] * bs[c][l];
            C[r * ldc + c] = s;
        }
}

template <typename T>
inline T dot(int64_t L, const T* a, const T* b) {
    constexpr int V = Vec<T>::lanes;
    const int64_t Lv = L / V * V;
    typename Vec<T>::type acc{};
    for (int64_t l = 0; l < Lv; l += V) acc += load(a + l) * load(b + l);
    T s = lane_sum<T>(acc);
    for (int64_t l = Lv; l < L; ++l) s += a[l] * b[l];
    return s;
}

template <typename T>
void dots(int64_t M, int64_t N, int64_t L, const T* A, int64_t lda, const T* B, int64_t ldb,
          T* C, int64_t ldc) {
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) {
        int64_t j = 0;
        for (; j + 4 <= N; j += 4)
            dots_4x4<T>(L, A + m * lda, lda, B + j * ldb, ldb, C + m * ldc + j, ldc);
        for (; j < N; ++j)
            for (int r = 0; r < 4; ++r) C[(m + r) * ldc + j] = dot<T>(L, A + (m + r) * lda, B + j * ldb);
    }
    for (; m < M; ++m)
        for (int64_t j = 0; j < N; ++j) C[m * ldc + j] = dot<T>(L, A + m * lda, B + j * ldb);
}

// out[F, ld_out] from in[n, F] rows (F columns); out's pad columns n..ld_out are zeroed.
template <typename T>
void transpose(const T* in, int64_t ld_in, int64_t n, int64_t f, T* out, int64_t ld_out) {
    for (int64_t i = 0; i < f; ++i) {
        for (int64_t b = 0; b < n; ++b) out[i * ld_out + b] = in[b * ld_in + i];
        for (int64_t b = n; b < ld_out; ++b) out[i * ld_out + b] = 0;
    }
}

template <typename T>
inline T sigmoid(T z) { return T(1) / (T(1) + std::exp(-z)); }

template <typename T>
void activate(int64_t act, T* h, int64_t count) {
    switch (act) {
        case ACT_RELU:
#pragma omp simd
            for (int64_t e = 0; e < count; ++e) h[e] = h[e] > T(0) ? h[e] : T(0);
            break;
        case ACT_TANH:
            for (int64_t e = 0; e < count; ++e) h[e] = std::tanh(h[e]);
            break;
        case ACT_SIGMOID:
            for (int64_t e = 0; e < count; ++e) h[e] = sigmoid(h[e]);
            break;
        default:
            break;
    }
}

// g *= f'(z) expressed through the saved output a = f(z) (relu: a > 0; tanh: 1 - a^2;
// sigmoid: a (1 - a)), as autograd's threshold / tanh / sigmoid backward kernels do.
template <typename T>
void activate_backward(int64_t act, const T* a, T* g, int64_t count) {
    switch (act) {
        case ACT_RELU:
#pragma omp simd
            for (int64_t e = 0; e < count; ++e) g[e] = a[e] <= T(0) ? T(0) : g[e];
            break;
        case ACT_TANH:
#pragma omp simd
            for (int64_t e = 0; e < count; ++e) g[e] = g[e] * (T(1) - a[e] * a[e]);
            break;
        case ACT_SIGMOID:
#pragma omp simd
            for (int64_t e = 0; e < count; ++e) g[e] = g[e] * ((T(1) - a[e]) * a[e]);
            break;
        default:
            break;
    }
}

// Everything one call needs; per-member pointers are derived from k.
template <typename T>
struct Net {
    const Layer* layers;
    int64_t n_layers, k_members;
    T* flat;        // parameters, [P]
    T* grad;        // gradients, [P] (written by train_step)
    const T* x;     // inputs [N, D]
    int64_t d;      // input width
    const int64_t* rows;  // [K, rows_stride] example indices (null: start + b for every member)
    int64_t rows_stride, start, n;  // the batch: n examples from `start` of the order
    int64_t head, loss, outputs;
    const T* yf;        // float targets [N, outputs] (mse / bce)
    const int64_t* yi;  // class targets [N] (ce)
};

// Scratch layout of one member; every feature-major buffer is [F, np] with np = n rounded up to
// 64 bytes (a multiple of every vector width), so the products never need a column tail. A
// narrow input is transposed to feature-major (x_cols) like every activation; a wide one
// (d >= WIDE_INPUT) stays in rows and the first layer works on them directly (forward by dot
// products, weight gradient by `gemm`).
struct Plan {
    int64_t np, dp, fmax;
    bool wide;
    std::vector<int64_t> out;  // offset of each layer's output (Linear: z; BN: y)
    std::vector<int64_t> aux;  // BN: offset of xhat [F, np] then invstd [F]
    int64_t x_rows, x_cols, g0, g1, gw, total;
};

template <typename T>
Plan make_plan(const Layer* layers, int64_t n_layers, int64_t n, int64_t d) {
    constexpr int64_t V = 64 / sizeof(T);
    Plan p;
    p.np = round_up(n, V);
    p.dp = round_up(d, V);
    p.wide = d >= WIDE_INPUT;
    p.fmax = d;
    for (int64_t i = 0; i < n_layers; ++i) p.fmax = std::max(p.fmax, layers[i].fout);
    int64_t off = 0;
    p.x_rows = off; off += n * p.dp;                   // gathered input rows [n, dp]
    p.x_cols = off; off += p.wide ? 0 : d * p.np;      // narrow: the same, feature-major [d, np]
    p.out.assign(n_layers, -1);
    p.aux.assign(n_layers, -1);
    for (int64_t i = 0; i < n_layers; ++i) {
        const Layer& l = layers[i];
        if (l.op == OP_LINEAR) {
            p.out[i] = off; off += l.fout * p.np;
        } else if (l.op == OP_ACT) {
            p.out[i] = p.out[i - 1];  // in place
        } else {
            p.out[i] = off; off += l.fout * p.np;
            p.aux[i] = off; off += l.fout * p.np + 2 * l.fout;  // xhat, invstd, mean
        }
    }
    p.g0 = off; off += p.fmax * p.np;
    p.g1 = off; off += p.fmax * p.np;
    p.gw = off; off += p.wide ? layers[0].fout * p.dp : 0;  // wide first layer's dW [fo, dp]
    p.total = off + V;                           // + alignment slack
    return p;
}

// Forward of member k through every layer, from the input rows `xr` [n, ldx] when the plan is
// wide, else from ws's x_cols; training uses and updates BatchNorm batch statistics, eval uses
// the running ones. Returns the output buffer.
template <typename T>
T* forward(const Net<T>& net, const Plan& p, int64_t k, T* ws, const T* xr, int64_t ldx,
           int64_t n, bool training) {
    const int64_t np = p.np;
    const T* h = ws + p.x_cols;
    for (int64_t i = 0; i < net.n_layers; ++i) {
        const Layer& l = net.layers[i];
        T* out = ws + p.out[i];
        if (l.op == OP_LINEAR) {
            const T* w = net.flat + l.off_w + k * l.fout * l.fin;
            const T* b = net.flat + l.off_b + k * l.fout;
            if (i == 0 && p.wide) {
                dots<T>(l.fout, n, l.fin, w, l.fin, xr, ldx, out, np);
                for (int64_t o = 0; o < l.fout; ++o)  // finite padding (see train_member)
                    std::fill(out + o * np + n, out + (o + 1) * np, T(0));
            } else
                gemm<T>(l.fout, np, l.fin, w, l.fin, 1, h, np, out, np, false);
            for (int64_t o = 0; o < l.fout; ++o) {
                T* row = out + o * np;
                const T bo = b[o];
#pragma omp simd
                for (int64_t e = 0; e < np; ++e) row[e] += bo;
            }
        } else if (l.op == OP_ACT) {
            activate<T>(l.act, out, l.fout * np);
        } else {
            const int64_t f = l.fout;
            const T* gamma = net.flat + l.off_w + k * f;
            const T* beta = net.flat + l.off_b + k * f;
            T* rm = static_cast<T*>(l.rm) + k * f;
            T* rv = static_cast<T*>(l.rv) + k * f;
            T* xhat = ws + p.aux[i];
            T* invstd = xhat + f * np;
            T* mean = invstd + f;
            // Phase by phase over the channels (not channel by channel), so the channels'
            // reductions and square roots are independent work the CPU overlaps.
            if (training) {
                for (int64_t c = 0; c < f; ++c) {
                    const T* in = h + c * np;
                    T s = 0;
#pragma omp simd reduction(+ : s)
                    for (int64_t e = 0; e < n; ++e) s += in[e];
                    mean[c] = s / T(n);
                }
                for (int64_t c = 0; c < f; ++c) {
                    const T* in = h + c * np;
                    const T mu = mean[c];
                    T ss = 0;
#pragma omp simd reduction(+ : ss)
                    for (int64_t e = 0; e < n; ++e) ss += (in[e] - mu) * (in[e] - mu);
                    invstd[c] = ss / T(n);  // the biased variance, for now
                }
                for (int64_t c = 0; c < f; ++c) {
                    const T var = invstd[c];
                    invstd[c] = T(1) / std::sqrt(var + T(BN_EPS));
                    rm[c] = rm[c] * T(1 - BN_MOMENTUM) + mean[c] * T(BN_MOMENTUM);
                    rv[c] = rv[c] * T(1 - BN_MOMENTUM) + var * T(BN_MOMENTUM * n / (n - 1));
                }
            } else {
                for (int64_t c = 0; c < f; ++c) {
                    mean[c] = rm[c];
                    invstd[c] = T(1) / std::sqrt(rv[c] + T(BN_EPS));
                }
            }
            for (int64_t c = 0; c < f; ++c) {
                const T* in = h + c * np;
                T* xh = xhat + c * np;
                T* y = out + c * np;
                const T mu = mean[c], is = invstd[c], g = gamma[c], bt = beta[c];
#pragma omp simd
                for (int64_t e = 0; e < np; ++e) {
                    xh[e] = (in[e] - mu) * is;
                    y[e] = xh[e] * g + bt;
                }
            }
        }
        h = out;
    }
    return const_cast<T*>(h);
}

// Per-member loss of raw outputs z [O, np] (first n columns) against this batch's targets, and
// d(loss)/dz into dz; the formulas of bench/losses.py (means over n * O, or n for ce).
template <typename T>
T loss_and_grad(const Net<T>& net, const int64_t* rows, int64_t k, const T* z, int64_t np,
                T* dz) {
    const int64_t n = net.n, O = net.outputs;
    T total = 0;
    auto row_of = [&](int64_t b) { return rows ? rows[k * net.rows_stride + b] : net.start + b; };
    if (net.loss == LOSS_CE || (net.loss == LOSS_MSE && net.head == ACT_SOFTMAX)) {
        std::vector<T> p(O);
        for (int64_t b = 0; b < n; ++b) {
            const int64_t r = row_of(b);
            T mx = z[b];
            for (int64_t o = 1; o < O; ++o) mx = std::max(mx, z[o * np + b]);
            T s = 0;
            for (int64_t o = 0; o < O; ++o) s += std::exp(z[o * np + b] - mx);
            const T lse = mx + std::log(s);
            for (int64_t o = 0; o < O; ++o) p[o] = std::exp(z[o * np + b] - lse);
            if (net.loss == LOSS_CE) {
                const int64_t t = net.yi[r];
                total += lse - z[t * np + b];
                for (int64_t o = 0; o < O; ++o)
                    dz[o * np + b] = (p[o] - (o == t ? T(1) : T(0))) / T(n);
            } else {  // mse on softmax probabilities: dz_j = p_j (dp_j - sum_i p_i dp_i)
                const T scale = T(2) / T(n * O);
                T dot = 0;
                for (int64_t o = 0; o < O; ++o) {
                    const T diff = p[o] - net.yf[r * O + o];
                    total += diff * diff;
                    dot += p[o] * diff * scale;
                }
                for (int64_t o = 0; o < O; ++o) {
                    const T dp = (p[o] - net.yf[r * O + o]) * scale;
                    dz[o * np + b] = p[o] * (dp - dot);
                }
            }
        }
        for (int64_t o = 0; o < O; ++o)
            for (int64_t b = n; b < np; ++b) dz[o * np + b] = 0;
        return net.loss == LOSS_CE ? total / T(n) : total / T(n * O);
    }
    const T scale = T(1) / T(n * O);
    for (int64_t o = 0; o < O; ++o) {
        for (int64_t b = 0; b < n; ++b) {
            const T zv = z[o * np + b];
            const T t = net.yf[row_of(b) * O + o];
            T& g = dz[o * np + b];
            if (net.loss == LOSS_BCE) {  // torch's binary_cross_entropy_with_logits
                const T max_val = std::max(-zv, T(0));
                total += (T(1) - t) * zv + max_val
                         + std::log(std::exp(-max_val) + std::exp(-zv - max_val));
                g = (sigmoid(zv) - t) * scale;
                continue;
            }
            T pv = zv, deriv = 1;
            if (net.head == ACT_SIGMOID) {
                pv = sigmoid(zv);
                deriv = (T(1) - pv) * pv;
            } else if (net.head == ACT_TANH) {
                pv = std::tanh(zv);
                deriv = T(1) - pv * pv;
            }
            const T diff = pv - t;
            total += diff * diff;
            g = diff * T(2) * scale * deriv;
        }
        for (int64_t b = n; b < np; ++b) dz[o * np + b] = 0;
    }
    return total * scale;
}

// One training step of member k: gather, forward, loss, backward; gradients into net.grad.
template <typename T>
void train_member(const Net<T>& net, const Plan& p, int64_t k, T* ws, T* losses) {
    const int64_t n = net.n, np = p.np, d = net.d;
    T* xr = ws + p.x_rows;
    for (int64_t b = 0; b < n; ++b) {
        const int64_t r = net.rows ? net.rows[k * net.rows_stride + b] : net.start + b;
        std::memcpy(xr + b * p.dp, net.x + r * d, sizeof(T) * d);
    }
    if (!p.wide) transpose<T>(xr, p.dp, n, d, ws + p.x_cols, np);
    T* z = forward<T>(net, p, k, ws, xr, p.dp, n, true);
    T* g = ws + p.g0;
    T* g_next = ws + p.g1;
    losses[k] = loss_and_grad<T>(net, net.rows, k, z, np, g);
    for (int64_t i = net.n_layers - 1; i >= 0; --i) {
        const Layer& l = net.layers[i];
        if (l.op == OP_ACT) {
            activate_backward<T>(l.act, ws + p.out[i], g, l.fout * np);
            continue;
        }
        if (l.op == OP_BN) {  // nn.BatchNorm1d's training backward, per channel
            const int64_t f = l.fout;
            const T* gamma = net.flat + l.off_w + k * f;
            T* dgamma = net.grad + l.off_w + k * f;
            T* dbeta = net.grad + l.off_b + k * f;
            const T* xhat = ws + p.aux[i];
            const T* invstd = xhat + f * np;
            // The reductions first (independent work), over all np columns: g's padding is
            // exactly zero and xhat's finite, so the padding adds exact zeros (no loop tail).
            for (int64_t c = 0; c < f; ++c) {
                const T* gc = g + c * np;
                const T* xh = xhat + c * np;
                T sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
                for (int64_t e = 0; e < np; ++e) {
                    sg += gc[e];
                    sgx += gc[e] * xh[e];
                }
                dgamma[c] = sgx;
                dbeta[c] = sg;
            }
            for (int64_t c = 0; c < f; ++c) {
                T* gc = g + c * np;
                const T* xh = xhat + c * np;
                const T coef = gamma[c] * invstd[c] / T(n), sg = dbeta[c], sgx = dgamma[c];
#pragma omp simd
                for (int64_t e = 0; e < np; ++e) gc[e] = coef * (T(n) * gc[e] - sg - xh[e] * sgx);
                for (int64_t e = n; e < np; ++e) gc[e] = 0;  // keep the padding exactly zero
            }
            continue;
        }
        // Linear i: input h [fin, np] (or the gathered rows for the first layer).
        const int64_t fi = l.fin, fo = l.fout;
        T* gw = net.grad + l.off_w + k * fo * fi;
        T* gb = net.grad + l.off_b + k * fo;
        for (int64_t o = 0; o < fo; ++o) {
            T s = 0;
            const T* go = g + o * np;
#pragma omp simd reduction(+ : s)
            for (int64_t e = 0; e < np; ++e) s += go[e];  // padding: exact zeros
            gb[o] = s;
        }
        if (i == 0 && p.wide) {  // dW = g [fo, n] @ rows [n, dp]
            T* gws = ws + p.gw;
            gemm<T>(fo, p.dp, n, g, np, 1, xr, p.dp, gws, p.dp, false);
            for (int64_t o = 0; o < fo; ++o)
                std::memcpy(gw + o * fi, gws + o * p.dp, sizeof(T) * fi);
            break;
        }
        // Over all np columns: g's padding is exactly zero and every pad value of the input is
        // finite (x_cols pads are zeroed), so the padding adds exact zeros and no tail is needed.
        dots<T>(fo, fi, np, g, np, i == 0 ? ws + p.x_cols : ws + p.out[i - 1], np, gw, fi);
        if (i == 0) break;
        const T* w = net.flat + l.off_w + k * fo * fi;
        gemm<T>(fi, np, fo, w, 1, fi, g, np, g_next, np, false);  // W^T g
        std::swap(g, g_next);
    }
}

template <typename T>
void eval_member(const Net<T>& net, int64_t k, T* ws, T* out) {
    const int64_t d = net.d, O = net.outputs;
    for (int64_t s = 0; s < net.n; s += EVAL_BLOCK) {
        const int64_t m = std::min(EVAL_BLOCK, net.n - s);
        const Plan p = make_plan<T>(net.layers, net.n_layers, m, d);
        const T* rows = net.x + (net.start + s) * d;
        if (!p.wide) transpose<T>(rows, d, m, d, ws + p.x_cols, p.np);
        const T* z = forward<T>(net, p, k, ws, rows, d, m, false);
        for (int64_t o = 0; o < O; ++o)
            std::memcpy(out + (k * O + o) * net.n + s, z + o * p.np, sizeof(T) * m);
    }
}

// Runs fn(k, thread) for k in [0, K) on `threads` threads (contiguous member ranges).
template <typename Fn>
void parallel_members(int64_t K, int64_t threads, Fn fn) {
    threads = std::max<int64_t>(1, std::min(threads, K));
    if (threads == 1) {
        for (int64_t k = 0; k < K; ++k) fn(k, 0);
        return;
    }
    std::vector<std::thread> pool;
    const int64_t per = (K + threads - 1) / threads;
    for (int64_t t = 1; t < threads; ++t) {
        pool.emplace_back([=] {
            for (int64_t k = t * per; k < std::min(K, (t + 1) * per); ++k) fn(k, t);
        });
    }
    for (int64_t k = 0; k < std::min(K, per); ++k) fn(k, 0);
    for (auto& th : pool) th.join();
}

template <typename T>
T* aligned(T* p) {
    auto a = reinterpret_cast<uintptr_t>(p);
    return reinterpret_cast<T*>((a + 63) / 64 * 64);
}

template <typename T>
Net<T> make_net(const int64_t* table, int64_t n_layers, int64_t k_members, void* flat, void* grad,
                const void* x, int64_t d, const int64_t* rows, int64_t rows_stride, int64_t start,
                int64_t n, int64_t head, int64_t loss, int64_t outputs, const void* yf,
                const int64_t* yi) {
    return Net<T>{reinterpret_cast<const Layer*>(table), n_layers, k_members,
                  static_cast<T*>(flat), static_cast<T*>(grad), static_cast<const T*>(x), d,
                  rows, rows_stride, start, n, head, loss, outputs,
                  static_cast<const T*>(yf), yi};
}

template <typename T>
void train_step_t(const int64_t* table, int64_t n_layers, int64_t k_members, void* flat,
                  void* grad, const void* x, int64_t d, const int64_t* rows, int64_t rows_stride,
                  int64_t start, int64_t n, int64_t head, int64_t loss, int64_t outputs,
                  const void* yf, const int64_t* yi, void* losses, void* workspace,
                  int64_t ws_stride, int64_t threads) {
    const Net<T> net = make_net<T>(table, n_layers, k_members, flat, grad, x, d, rows,
                                   rows_stride, start, n, head, loss, outputs, yf, yi);
    const Plan p = make_plan<T>(net.layers, n_layers, n, d);
    T* ws = static_cast<T*>(workspace);
    parallel_members(k_members, threads, [&](int64_t k, int64_t t) {
        train_member<T>(net, p, k, aligned(ws + t * ws_stride), static_cast<T*>(losses));
    });
}

template <typename T>
void eval_forward_t(const int64_t* table, int64_t n_layers, int64_t k_members, void* flat,
                    const void* x, int64_t d, int64_t start, int64_t n, int64_t outputs,
                    void* out, void* workspace, int64_t ws_stride, int64_t threads) {
    const Net<T> net = make_net<T>(table, n_layers, k_members, flat, nullptr, x, d, nullptr, 0,
                                   start, n, ACT_IDENTITY, LOSS_MSE, outputs, nullptr, nullptr);
    T* ws = static_cast<T*>(workspace);
    parallel_members(k_members, threads, [&](int64_t k, int64_t t) {
        eval_member<T>(net, k, aligned(ws + t * ws_stride), static_cast<T*>(out));
    });
}

}  // namespace

extern "C" {

// Elements of workspace one thread needs for a training step on n examples (elem: 4 or 8).
int64_t nb_workspace_elems(const int64_t* table, int64_t n_layers, int64_t n, int64_t d,
                           int64_t elem) {
    const auto* layers = reinterpret_cast<const Layer*>(table);
    const int64_t m = std::max<int64_t>(n, EVAL_BLOCK);
    return elem == 8 ? make_plan<double>(layers, n_layers, m, d).total
                     : make_plan<float>(layers, n_layers, m, d).total;
}

int64_t nb_table_row() { return ROW; }

int64_t nb_wide_input() { return WIDE_INPUT; }

int64_t nb_vec_bytes() { return VEC_BYTES; }

void nb_train_step(int64_t elem, const int64_t* table, int64_t n_layers, int64_t k_members,
                   void* flat, void* grad, const void* x, int64_t d, const int64_t* rows,
                   int64_t rows_stride, int64_t start, int64_t n, int64_t head, int64_t loss,
                   int64_t outputs, const void* yf, const int64_t* yi, void* losses,
                   void* workspace, int64_t ws_stride, int64_t threads) {
    if (elem == 8)
        train_step_t<double>(table, n_layers, k_members, flat, grad, x, d, rows, rows_stride,
                             start, n, head, loss, outputs, yf, yi, losses, workspace,
                             ws_stride, threads);
    else
        train_step_t<float>(table, n_layers, k_members, flat, grad, x, d, rows, rows_stride,
                            start, n, head, loss, outputs, yf, yi, losses, workspace,
                            ws_stride, threads);
}

void nb_eval_forward(int64_t elem, const int64_t* table, int64_t n_layers, int64_t k_members,
                     void* flat, const void* x, int64_t d, int64_t start, int64_t n,
                     int64_t outputs, void* out, void* workspace, int64_t ws_stride,
                     int64_t threads) {
    if (elem == 8)
        eval_forward_t<double>(table, n_layers, k_members, flat, x, d, start, n, outputs, out,
                               workspace, ws_stride, threads);
    else
        eval_forward_t<float>(table, n_layers, k_members, flat, x, d, start, n, outputs, out,
                              workspace, ws_stride, threads);
}

}  // extern "C"
