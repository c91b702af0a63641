/* Row-block layout and window kernels of the rolling engine (ext/engine.pyx).
 *
 * A row block (one per row, RB bytes, row-major) is the row head (40 bytes: latest
 * second, exact values of each deque's back entry and of the entry before it), then
 * one array of K lanes per field (lane k = window k): the hot fields first --
 * everything every in-order bar touches, 4 cache lines for K = 3 (moving high, low and
 * the front slots off them measured 0.96-0.98x the upsert time at 12,000 rows) -- then
 * the warm ones (high, low, hslot, lslot: written when a window's max or min front
 * moves, and read by the clock step), then ``open`` and ``fslot`` (written when a
 * window's earliest bar changes: by evictions, in row order).  The offsets below are
 * the single home of the layout: the engine reads them through ff_layout(), the kernels
 * use them directly, so a kernel called with a literal K (the engine's K == 3 case) has
 * every address folded.
 *
 * The kernels do two lanes at a time with GCC vector extensions (two doubles: SSE2, so
 * any x86-64 runs them, other targets get GCC's generic lowering) and an odd last lane
 * with the same steps in scalar code.  Numbers are exactly those of the scalar code they
 * replace: Knuth's TwoSum gives the exact rounding error of an addition (what Neumaier's
 * branch on |s| >= |x| computes) without the branch; adding 0.0 to a lane is an exact
 * no-op (a sum and its normalized compensation do not change), so lanes that take no
 * part in an eviction are computed anyway, with zeros.
 */
#ifndef FF_ENGINE_LANES_H
#define FF_ENGINE_LANES_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ff_prefetch.h"

/* byte offsets in a row block of K lanes (the row head, 40 bytes, is at 0) */
#define FF_O_CNT(K)   ((Py_ssize_t)40)                  /* int64 count (output) */
#define FF_O_VOL(K)   (40 + 8 * (Py_ssize_t)(K))        /* double volume sum (output) */
#define FF_O_VWAP(K)  (40 + 16 * (Py_ssize_t)(K))       /* double vwap (output) */
#define FF_O_CLOSE(K) (40 + 24 * (Py_ssize_t)(K))       /* double close (output) */
#define FF_O_VC(K)    (40 + 32 * (Py_ssize_t)(K))       /* double volume compensation */
#define FF_O_PS(K)    (40 + 40 * (Py_ssize_t)(K))       /* double pv sum */
#define FF_O_PC(K)    (40 + 48 * (Py_ssize_t)(K))       /* double pv compensation */
#define FF_O_VA(K)    (40 + 56 * (Py_ssize_t)(K))       /* float ~sum |volume| since recompute */
#define FF_O_PA(K)    (40 + 60 * (Py_ssize_t)(K))       /* float ~sum |pv| since recompute */
#define FF_O_FMAX(K)  (40 + 64 * (Py_ssize_t)(K))       /* int32 front index, max deque */
#define FF_O_FMIN(K)  (40 + 68 * (Py_ssize_t)(K))       /* int32 front index, min deque */
/* warm: written when a window's max or min front moves */
#define FF_O_HIGH(K)  (40 + 72 * (Py_ssize_t)(K))       /* double high (output) */
#define FF_O_LOW(K)   (40 + 80 * (Py_ssize_t)(K))       /* double low (output) */
#define FF_O_HSLOT(K) (40 + 88 * (Py_ssize_t)(K))       /* uint16 slot of the max front */
#define FF_O_LSLOT(K) (40 + 90 * (Py_ssize_t)(K))       /* uint16 slot of the min front */
/* cold: written when a window's earliest bar changes (by an eviction, in row order) */
#define FF_O_OPEN(K)  ((40 + 92 * (Py_ssize_t)(K) + 7) & ~(Py_ssize_t)7)  /* double open (output) */
#define FF_O_FSLOT(K) (FF_O_OPEN(K) + 8 * (Py_ssize_t)(K))  /* uint16 slot of the earliest bar */
#define FF_RB(K)      ((FF_O_FSLOT(K) + 2 * (Py_ssize_t)(K) + 63) & ~(Py_ssize_t)63)

/* _upsert_run (engine.pyx) prefetches the hot lines of a 3-window block as 4 literal
   offsets: the hot fields must end where the warm ones start, at line 4 */
_Static_assert(FF_O_HIGH(3) == 4 * 64, "3-window hot fields: exactly lines 0-3 of the block");

/* the offsets for K lanes, in the order of the engine's o_* fields; returns RB */
static Py_ssize_t ff_layout(Py_ssize_t K, Py_ssize_t *o)
{
    o[0] = FF_O_CNT(K); o[1] = FF_O_VOL(K); o[2] = FF_O_VWAP(K); o[3] = FF_O_CLOSE(K);
    o[4] = FF_O_HIGH(K); o[5] = FF_O_LOW(K); o[6] = FF_O_OPEN(K); o[7] = FF_O_VC(K);
    o[8] = FF_O_PS(K); o[9] = FF_O_PC(K); o[10] = FF_O_VA(K); o[11] = FF_O_PA(K);
    o[12] = FF_O_FMAX(K); o[13] = FF_O_FMIN(K); o[14] = FF_O_HSLOT(K);
    o[15] = FF_O_LSLOT(K); o[16] = FF_O_FSLOT(K);
    return FF_RB(K);
}

#define FF_F64(b, off) ((double *)((b) + (off)))
#define FF_I64(b, off) ((int64_t *)((b) + (off)))
#define FF_F32(b, off) ((float *)((b) + (off)))
#define FF_I32(b, off) ((int32_t *)((b) + (off)))
#define FF_U16(b, off) ((uint16_t *)((b) + (off)))

typedef struct { double v, pv; } ff_vp;
typedef struct { double o, h, l, c; } ff_ohlc;

typedef double ff_v2d __attribute__((vector_size(16)));
typedef int64_t ff_v2i __attribute__((vector_size(16)));
typedef float ff_v2f __attribute__((vector_size(8)));

static inline ff_v2d ff_ld2(const double *p) { ff_v2d x; memcpy(&x, p, 16); return x; }
static inline void ff_st2(double *p, ff_v2d x) { memcpy(p, &x, 16); }
static inline ff_v2f ff_ld2f(const float *p) { ff_v2f x; memcpy(&x, p, 8); return x; }
static inline void ff_st2f(float *p, ff_v2f x) { memcpy(p, &x, 8); }
static inline ff_v2d ff_abs2(ff_v2d x)
{
    const ff_v2i m = {INT64_MAX, INT64_MAX};
    return (ff_v2d)((ff_v2i)x & m);
}

#define FF_INLINE static inline __attribute__((always_inline))

/* Lane k of block b (K lanes): volume += x (then renormalized: vol is the rounded total,
 * vc the rest), pv += y (Neumaier: ps, pc), the cancellation accumulators += |x|, |y|
 * (float), vwap.  Returns 1 if ``check`` and the sums cancelled heavily. */
FF_INLINE unsigned ff_sum1(char *b, Py_ssize_t K, Py_ssize_t k, double x, double y,
                           int check, double cancel)
{
    double *vol = FF_F64(b, FF_O_VOL(K)) + k, *vc = FF_F64(b, FF_O_VC(K)) + k;
    double *ps = FF_F64(b, FF_O_PS(K)) + k, *pc = FF_F64(b, FF_O_PC(K)) + k;
    float *va = FF_F32(b, FF_O_VA(K)) + k, *pa = FF_F32(b, FF_O_PA(K)) + k;
    double s = *vol, c = *vc, t, z, e, u, q;
    t = s + x; z = t - s; e = (s - (t - z)) + (x - z);
    c = c + e;
    u = t + c; z = u - t; c = (t - (u - z)) + (c - z);
    *vol = u; *vc = c;
    s = *ps;
    t = s + y; z = t - s; e = (s - (t - z)) + (y - z);
    q = *pc + e;
    *ps = t; *pc = q;
    *va += (float)fabs(x);
    *pa += (float)fabs(y);
    s = t + q;
    FF_F64(b, FF_O_VWAP(K))[k] = u != 0.0 ? s / u : NAN;
    return check && (fabs(u) < cancel * *va || fabs(s) < cancel * *pa);
}

/* ff_sum1 of lanes k and k + 1 at once (x, y: their addends); returns a 2-bit mask */
FF_INLINE unsigned ff_sum2(char *b, Py_ssize_t K, Py_ssize_t k, ff_v2d x, ff_v2d y,
                           int check, double cancel)
{
    double *vol = FF_F64(b, FF_O_VOL(K)) + k, *vc = FF_F64(b, FF_O_VC(K)) + k;
    double *ps = FF_F64(b, FF_O_PS(K)) + k, *pc = FF_F64(b, FF_O_PC(K)) + k;
    float *va = FF_F32(b, FF_O_VA(K)) + k, *pa = FF_F32(b, FF_O_PA(K)) + k;
    ff_v2d s = ff_ld2(vol), c = ff_ld2(vc), t, z, e, u, q;
    ff_v2f a = ff_ld2f(va) + __builtin_convertvector(ff_abs2(x), ff_v2f);
    ff_v2f pa2 = ff_ld2f(pa) + __builtin_convertvector(ff_abs2(y), ff_v2f);
    ff_v2i zero;
    const ff_v2d nan2 = {NAN, NAN};
    t = s + x; z = t - s; e = (s - (t - z)) + (x - z);
    c = c + e;
    u = t + c; z = u - t; c = (t - (u - z)) + (c - z);
    ff_st2(vol, u); ff_st2(vc, c);
    s = ff_ld2(ps);
    t = s + y; z = t - s; e = (s - (t - z)) + (y - z);
    q = ff_ld2(pc) + e;
    ff_st2(ps, t); ff_st2(pc, q);
    ff_st2f(va, a); ff_st2f(pa, pa2);
    s = t + q;
    zero = (u == 0.0);
    q = s / u;
    q = (ff_v2d)(((ff_v2i)q & ~zero) | ((ff_v2i)nan2 & zero));
    ff_st2(FF_F64(b, FF_O_VWAP(K)) + k, q);
    if (check) {
        ff_v2i cx = (ff_abs2(u) < cancel * __builtin_convertvector(a, ff_v2d))
                    | (ff_abs2(s) < cancel * __builtin_convertvector(pa2, ff_v2d));
        return (unsigned)(cx[0] & 1) | (unsigned)(cx[1] & 2);
    }
    return 0;
}

/* -- monotonic deques (docs/ENGINE.md, "High/low") ------------------------------------
 * One entry: the bar's slot and a 32-bit key of its high (max deque) or low (min deque).
 * For a value on the 1e-4 grid (exactly the double nearest k / 1e4, k < 2**31: every
 * decimal price with at most 4 decimals below 214,748.3648) the key is the flag bit and
 * k, which decides comparisons exactly (and gives the exact value back); otherwise the
 * bits of the value's float32 (the value is > 0, so the sign bit is clear), which decides
 * them unless the float32s tie (then the exact value is read from the store). */
typedef struct __attribute__((packed)) { uint32_t key; uint16_t slot; } ff_dqe;

#define FF_KEY_GRID 0x80000000u
#define FF_GRID 1e4

/* nearest float32 (monotone in x; clamped so the conversion is always defined) */
static inline float ff_f32(double x)
{
    return x > FLT_MAX ? FLT_MAX : x < -FLT_MAX ? -FLT_MAX : (float)x;
}

static inline uint32_t ff_f32bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float ff_f32of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* the exact value of a grid key's k (the double nearest k / 1e4) */
static inline double ff_grid_value(uint32_t k) { return (double)k / FF_GRID; }

/* the deque key of a value x > 0 */
FF_INLINE uint32_t ff_dkey(double x)
{
    double y = x * FF_GRID;
    if (y < 2147483647.0) {
        int64_t k = (int64_t)(y + 0.5);
        if (ff_grid_value((uint32_t)k) == x)
            return FF_KEY_GRID | (uint32_t)k;
    }
    return ff_f32bits(ff_f32(x));
}

/* a later bar of value ``later`` makes an earlier one irrelevant (ties: keep the latest) */
#define FF_DOM(later, earlier, ismax) ((ismax) ? (later) >= (earlier) : (later) <= (earlier))

/* the bar's high (max deque) or low (min deque) in the row's store column ``col``
 * (``store + row``, stride NP per slot) */
#define FF_HL(col, NP, slot, ismax) ((ismax) ? (col)[(Py_ssize_t)(slot) * (NP)].h \
                                             : (col)[(Py_ssize_t)(slot) * (NP)].l)

/* The sign of x - (value of deque entry ``at``) (x has key kx), exact: from the keys when
 * they decide (two grid keys; a grid entry's exact value; float32s that differ: rounding
 * is monotone), else from the store (the high if ``hi``, else the low) */
FF_INLINE int ff_key_cmp(double x, uint32_t kx, const ff_dqe *q, Py_ssize_t at,
                         const ff_ohlc *col, Py_ssize_t NP, int hi)
{
    uint32_t ke = q[at].key;
    float fx, fe;
    double v;
    if (ke & FF_KEY_GRID) {
        if (kx & FF_KEY_GRID)
            return (kx > ke) - (kx < ke);
        v = ff_grid_value(ke & ~FF_KEY_GRID);
        return (x > v) - (x < v);
    }
    fx = ff_f32(x);
    fe = ff_f32of(ke);
    if (fx != fe)
        return (fx > fe) - (fx < fe);
    v = FF_HL(col, NP, q[at].slot, hi);
    return (x > v) - (x < v);
}

/* FF_DOM(later, value of deque entry ``at``) */
FF_INLINE int ff_dom_hint(double later, uint32_t klater, const ff_dqe *q, Py_ssize_t at,
                          const ff_ohlc *col, Py_ssize_t NP, int ismax)
{
    int c = ff_key_cmp(later, klater, q, at, col, NP, ismax);
    return ismax ? c >= 0 : c <= 0;
}

/* FF_DOM(value of deque entry ``at``, earlier): the entry is a later bar */
FF_INLINE int ff_dom_by_hint(double earlier, uint32_t kearlier, const ff_dqe *q, Py_ssize_t at,
                             const ff_ohlc *col, Py_ssize_t NP, int ismax)
{
    int c = ff_key_cmp(earlier, kearlier, q, at, col, NP, ismax);
    return ismax ? c <= 0 : c >= 0;
}

/* Push a new latest bar (value val, key, slot) on a deque (ring q, index mask) whose back
 * is at p - 1 and front at head: pop the entries it dominates, write it, return its
 * index (the new tail is that + 1).  *back and *back2 are the exact values of the back
 * entry and of the one before it (NaN: not mirrored); they decide the first two pops
 * without reading the ring or the store.  (Branches, not selects: a predicted pop lets
 * the CPU run ahead to the next entry's load; branch-free pops measured 6-13% slower.) */
FF_INLINE int64_t ff_push(ff_dqe *q, double *back, double *back2, int64_t p, int64_t head,
                          double val, uint32_t key, uint16_t slot, int64_t mask,
                          const ff_ohlc *col, Py_ssize_t NP, int ismax)
{
    if (p > head && FF_DOM(val, *back, ismax)) {
        p -= 1;
        if (p > head) {
            double b2 = *back2;
            int pop = b2 == b2 ? FF_DOM(val, b2, ismax)
                               : ff_dom_hint(val, key, q, (p - 1) & mask, col, NP, ismax);
            if (pop) {
                p -= 1;
                while (p > head && ff_dom_hint(val, key, q, (p - 1) & mask, col, NP, ismax))
                    p -= 1;
                *back2 = NAN;       /* the new entry before the back: not mirrored */
            }
        }
        /* popped one: the entry before the back is the same as before */
    } else {
        *back2 = *back;             /* popped none: the old back is before the new one */
    }
    q[p & mask].key = key;
    q[p & mask].slot = slot;
    *back = val;
    return p;
}

/* the deque helpers with the engine's own struct pointers (same layouts) */
FF_INLINE int64_t ff_push_v(void *q, double *back, double *back2, int64_t p, int64_t head,
                            double val, uint32_t key, uint16_t slot, int64_t mask,
                            const void *col, Py_ssize_t NP, int ismax)
{
    return ff_push((ff_dqe *)q, back, back2, p, head, val, key, slot, mask,
                   (const ff_ohlc *)col, NP, ismax);
}

FF_INLINE int ff_dom_hint_v(double later, uint32_t klater, const void *q, Py_ssize_t at,
                            const void *col, Py_ssize_t NP, int ismax)
{
    return ff_dom_hint(later, klater, (const ff_dqe *)q, at, (const ff_ohlc *)col, NP, ismax);
}

FF_INLINE int ff_dom_by_hint_v(double earlier, uint32_t kearlier, const void *q, Py_ssize_t at,
                               const void *col, Py_ssize_t NP, int ismax)
{
    return ff_dom_by_hint(earlier, kearlier, (const ff_dqe *)q, at, (const ff_ohlc *)col, NP,
                          ismax);
}

/* A new latest bar inside every window (slot, prices, volume v >= 0, pv), after the
 * deque pushes put it at index px (max deque) and pn (min deque): fronts, count, open
 * (a window's first bar), sums, vwap, close of every lane.  The cancellation check
 * (needed only when pv < 0: a volume >= 0 cannot cancel on an add) is the caller's. */
FF_INLINE void ff_add_new_k(char *b, Py_ssize_t K, uint16_t slot, double o, double h,
                            double l, double c, double v, double pv, int64_t px, int64_t pn)
{
    int64_t *cnt = FF_I64(b, FF_O_CNT(K));
    int32_t *fmax = FF_I32(b, FF_O_FMAX(K)), *fmin = FF_I32(b, FF_O_FMIN(K));
    Py_ssize_t k;
    const ff_v2d x = {v, v}, y = {pv, pv};
    for (k = 0; k < K; k++) {
        if (fmax[k] >= px) {
            fmax[k] = (int32_t)px;
            FF_U16(b, FF_O_HSLOT(K))[k] = slot;
            FF_F64(b, FF_O_HIGH(K))[k] = h;
        }
        if (fmin[k] >= pn) {
            fmin[k] = (int32_t)pn;
            FF_U16(b, FF_O_LSLOT(K))[k] = slot;
            FF_F64(b, FF_O_LOW(K))[k] = l;
        }
        if (++cnt[k] == 1) {
            FF_U16(b, FF_O_FSLOT(K))[k] = slot;
            FF_F64(b, FF_O_OPEN(K))[k] = o;
        }
        FF_F64(b, FF_O_CLOSE(K))[k] = c;
    }
    for (k = 0; k + 1 < K; k += 2)
        ff_sum2(b, K, k, x, y, 0, 0.0);
    if (K & 1)
        ff_sum1(b, K, K - 1, v, pv, 0, 0.0);
}

/* any K but 3: an engine of 3 windows takes such a bar through ff_new3 (below) */
static inline void ff_add_new(char *b, Py_ssize_t K, uint16_t slot, double o, double h,
                              double l, double c, double v, double pv, int64_t px, int64_t pn)
{
    ff_add_new_k(b, K, slot, o, h, l, c, v, pv, px, pn);
}

/* ---- the steady-state bar of 3 windows (K = 3): ext/engine.pyx's _upsert_run ----------
 *
 * A new latest bar of a row, inside every window (the caller checked: second > the
 * row's latest, second > T - min(windows)): both deque pushes and the add kernel, with
 * every offset a constant and the work of the third lane merged into vector operations
 * it shares with nothing else.  The numbers are exactly those of ff_push + ff_add_new_k:
 * the same IEEE operations on the same operands, lane by lane. */

#if defined(__SSE2__) && defined(__x86_64__)
#include <emmintrin.h>
#define FF_DKEY2_SSE2 1
#endif

/* ff_dkey of x0 and x1 (both > 0 and finite) at once */
FF_INLINE void ff_dkey2(double x0, double x1, uint32_t *k0, uint32_t *k1)
{
#if defined(FF_DKEY2_SSE2)
    const __m128d x = _mm_set_pd(x1, x0);
    __m128d y = _mm_mul_pd(x, _mm_set1_pd(FF_GRID));
    /* y >= 2**31 - 1 (not a grid key): k = 0, whose value 0 is not x > 0 */
    __m128d yin = _mm_and_pd(y, _mm_cmplt_pd(y, _mm_set1_pd(2147483647.0)));
    __m128i k = _mm_cvttpd_epi32(_mm_add_pd(yin, _mm_set1_pd(0.5)));
    __m128d g = _mm_div_pd(_mm_cvtepi32_pd(k), _mm_set1_pd(FF_GRID));
    __m128i eq = _mm_shuffle_epi32(_mm_castpd_si128(_mm_cmpeq_pd(g, x)), 0x08);
    __m128i f = _mm_castps_si128(_mm_cvtpd_ps(_mm_min_pd(x, _mm_set1_pd(FLT_MAX))));
    __m128i kg = _mm_or_si128(k, _mm_set1_epi32((int)FF_KEY_GRID));
    uint64_t both = (uint64_t)_mm_cvtsi128_si64(
        _mm_or_si128(_mm_and_si128(eq, kg), _mm_andnot_si128(eq, f)));
    *k0 = (uint32_t)both;
    *k1 = (uint32_t)(both >> 32);
#else
    *k0 = ff_dkey(x0);
    *k1 = ff_dkey(x1);
#endif
}

typedef float ff_v4f __attribute__((vector_size(16)));

/* ff_add_new_k(b, 3, ...) */
FF_INLINE void ff_add_new3(char *b, uint16_t slot, double o, double h, double l, double c,
                           double v, double pv, int64_t px, int64_t pn)
{
    int64_t *cnt = FF_I64(b, FF_O_CNT(3));
    int32_t *fmax = FF_I32(b, FF_O_FMAX(3)), *fmin = FF_I32(b, FF_O_FMIN(3));
    double *vol = FF_F64(b, FF_O_VOL(3)), *vc = FF_F64(b, FF_O_VC(3));
    double *ps = FF_F64(b, FF_O_PS(3)), *pc = FF_F64(b, FF_O_PC(3));
    double *vw = FF_F64(b, FF_O_VWAP(3)), *cl = FF_F64(b, FF_O_CLOSE(3));
    float *va = FF_F32(b, FF_O_VA(3));
    const ff_v2d x = {v, v}, y = {pv, pv}, xy = {v, pv}, cc = {c, c};
    const ff_v2d nan2 = {NAN, NAN};
    int64_t c0 = cnt[0], c1 = cnt[1], c2 = cnt[2];
    ff_v2d s, t, z, e, u, q, cm;
    ff_v2i zero;
    Py_ssize_t k;
    float fv, fp;
    double tv, cv, uv, zv;
    cnt[0] = c0 + 1; cnt[1] = c1 + 1; cnt[2] = c2 + 1;
    if (__builtin_expect((c0 == 0) | (c1 == 0) | (c2 == 0), 0)) {
        for (k = 0; k < 3; k++)
            if (cnt[k] == 1) {
                FF_U16(b, FF_O_FSLOT(3))[k] = slot;
                FF_F64(b, FF_O_OPEN(3))[k] = o;
            }
    }
#if defined(FF_DKEY2_SSE2)
    {
        /* fmax[0..2], fmin[0..2]: 6 int32 in a row; fmax[k] >= px <=> fmax[k] > px - 1 */
        const __m128i f4 = _mm_loadu_si128((const __m128i *)fmax);
        const __m128i f2 = _mm_loadl_epi64((const __m128i *)(fmin + 1));
        const int xm = (int)px - 1, nm = (int)pn - 1;
        unsigned m = (unsigned)_mm_movemask_ps(_mm_castsi128_ps(
                         _mm_cmpgt_epi32(f4, _mm_set_epi32(nm, xm, xm, xm))))
                   | ((unsigned)_mm_movemask_ps(_mm_castsi128_ps(
                         _mm_cmpgt_epi32(f2, _mm_set1_epi32(nm)))) & 3) << 4;
        if (m) {
            for (k = 0; k < 3; k++) {
                if ((m >> k) & 1) {
                    fmax[k] = (int32_t)px;
                    FF_U16(b, FF_O_HSLOT(3))[k] = slot;
                    FF_F64(b, FF_O_HIGH(3))[k] = h;
                }
                if ((m >> (k + 3)) & 1) {
                    fmin[k] = (int32_t)pn;
                    FF_U16(b, FF_O_LSLOT(3))[k] = slot;
                    FF_F64(b, FF_O_LOW(3))[k] = l;
                }
            }
        }
    }
#else
    for (k = 0; k < 3; k++) {
        if (fmax[k] >= px) {
            fmax[k] = (int32_t)px;
            FF_U16(b, FF_O_HSLOT(3))[k] = slot;
            FF_F64(b, FF_O_HIGH(3))[k] = h;
        }
        if (fmin[k] >= pn) {
            fmin[k] = (int32_t)pn;
            FF_U16(b, FF_O_LSLOT(3))[k] = slot;
            FF_F64(b, FF_O_LOW(3))[k] = l;
        }
    }
#endif
    ff_st2(cl, cc);
    cl[2] = c;
    /* lanes 0 and 1: ff_sum2 */
    s = ff_ld2(vol); cm = ff_ld2(vc);
    t = s + x; z = t - s; e = (s - (t - z)) + (x - z);
    cm = cm + e;
    u = t + cm; z = u - t; cm = (t - (u - z)) + (cm - z);
    ff_st2(vol, u); ff_st2(vc, cm);
    s = ff_ld2(ps);
    t = s + y; z = t - s; e = (s - (t - z)) + (y - z);
    q = ff_ld2(pc) + e;
    ff_st2(ps, t); ff_st2(pc, q);
    s = t + q;
    zero = (u == 0.0);
    q = s / u;
    q = (ff_v2d)(((ff_v2i)q & ~zero) | ((ff_v2i)nan2 & zero));
    ff_st2(vw, q);
    /* lane 2: ff_sum1, its volume and pv TwoSums side by side.  Its operands are read
     * 8 bytes each (a 16-byte load overlapping the 16-byte stores of lanes 0-1 just
     * above would wait for them: a failed store-to-load forward) */
#if defined(FF_DKEY2_SSE2)
    s = _mm_loadh_pd(_mm_load_sd(vol + 2), ps + 2);
    t = s + xy; z = t - s; e = (s - (t - z)) + (xy - z);
    cm = _mm_loadh_pd(_mm_load_sd(vc + 2), pc + 2) + e;
#else
    s = (ff_v2d){vol[2], ps[2]};
    t = s + xy; z = t - s; e = (s - (t - z)) + (xy - z);
    cm = (ff_v2d){vc[2], pc[2]} + e;
#endif
    tv = t[0]; cv = cm[0];
    uv = tv + cv; zv = uv - tv; cv = (tv - (uv - zv)) + (cv - zv);
    vol[2] = uv; vc[2] = cv;
    ps[2] = t[1]; pc[2] = cm[1];
    tv = t[1] + cm[1];
    vw[2] = uv != 0.0 ? tv / uv : NAN;
    /* the cancellation accumulators: va[0..2] and pa[0..2] are 6 floats in a row */
    fv = (float)fabs(v); fp = (float)fabs(pv);
    {
        ff_v4f a;
        ff_v2f a2;
        memcpy(&a, va, 16);
        a += (ff_v4f){fv, fv, fv, fp};
        memcpy(va, &a, 16);
        a2 = ff_ld2f(va + 4) + (ff_v2f){fp, fp};
        ff_st2f(va + 4, a2);
    }
}

_Static_assert(FF_O_PA(3) == FF_O_VA(3) + 12 && FF_O_FMIN(3) == FF_O_FMAX(3) + 12,
               "va/pa and fmax/fmin lanes adjacent for K = 3");

/* The steady-state bar of row block b (K = 3), its slot and values, after the caller
 * stored it and set the row's latest second: keys, both pushes (tl: the row's two deque
 * tails; qx, qn its rings; kmax the longest window), the add kernel.  *pxo, *pno get the
 * new entries' indices.  Returns nonzero when the caller has rare work left: pv < 0 (a
 * window's pv sum may cancel) or a tail reached ``rebase``. */
FF_INLINE int ff_new3(char *b, int32_t *tl, void *qx, void *qn, int64_t mask,
                      const void *col, Py_ssize_t NP, Py_ssize_t kmax, uint16_t slot,
                      double o, double h, double l, double c, double v, double pv,
                      int64_t rebase, int64_t *pxo, int64_t *pno)
{
    double *back = FF_F64(b, 8), *back2 = FF_F64(b, 24);
    int64_t hx = FF_I32(b, FF_O_FMAX(3))[kmax], hn = FF_I32(b, FF_O_FMIN(3))[kmax];
    int64_t px = tl[0], pn = tl[1];
    uint32_t kh, kl;
    ff_dkey2(h, l, &kh, &kl);
    px = ff_push((ff_dqe *)qx, back, back2, px, hx, h, kh, slot, mask,
                 (const ff_ohlc *)col, NP, 1);
    tl[0] = (int32_t)(px + 1);
    pn = ff_push((ff_dqe *)qn, back + 1, back2 + 1, pn, hn, l, kl, slot, mask,
                 (const ff_ohlc *)col, NP, 0);
    tl[1] = (int32_t)(pn + 1);
    ff_add_new3(b, slot, o, h, l, c, v, pv, px, pn);
    *pxo = px;
    *pno = pn;
    return (pv < 0.0) | (px + 1 >= rebase) | (pn + 1 >= rebase);
}

/* One clock step's eviction of lanes [k0, k1) of row r (k1 - k0 <= 64), block b:
 * es[k] is the slot of the second leaving window k (-1: none).  Lanes holding that
 * second and more than one bar lose it (count, sums, vwap; a max/min front that leaves
 * is appended to pend as r << 16 | k << 1 | min, for the engine to resolve after the
 * pass; the earliest bar's successor is found by scanning forward).  Lanes holding it
 * as their only bar are left to the engine: bit k - k0 of *clear.  Returns the lanes
 * whose sums cancelled (bit k - k0), for the engine's exact recompute. */
FF_INLINE uint64_t ff_evict_k(char *b, Py_ssize_t K, Py_ssize_t k0, Py_ssize_t k1,
                              Py_ssize_t r, const uint8_t *present, const ff_vp *svp,
                              const ff_ohlc *soh, Py_ssize_t NP, Py_ssize_t D,
                              const int64_t *es, int64_t *pend, Py_ssize_t *npend,
                              uint64_t *clear, double cancel)
{
    int64_t *cnt = FF_I64(b, FF_O_CNT(K));
    uint16_t *hslot = FF_U16(b, FF_O_HSLOT(K)), *lslot = FF_U16(b, FF_O_LSLOT(K));
    uint16_t *fslot = FF_U16(b, FF_O_FSLOT(K));
    Py_ssize_t k, n = *npend;
    uint64_t go = 0, m = 0, clr = 0;
    double xv[2], xp[2];
    for (k = k0; k < k1; k++) {
        int64_t sl = es[k];
        if (sl >= 0 && present[sl * NP + r]) {
            if (cnt[k] <= 1) clr |= (uint64_t)1 << (k - k0);
            else go |= (uint64_t)1 << (k - k0);
        }
    }
    *clear = clr;
    if (!go) return 0;
    for (k = k0; k < k1; k += 2) {
        Py_ssize_t j;
        for (j = 0; j < 2; j++) {
            xv[j] = 0.0; xp[j] = 0.0;
            if (k + j < k1 && (go >> (k + j - k0)) & 1) {
                const ff_vp *p = &svp[es[k + j] * NP + r];
                xv[j] = -p->v; xp[j] = -p->pv;
            }
        }
        if (k + 1 < k1)
            m |= (uint64_t)ff_sum2(b, K, k, (ff_v2d){xv[0], xv[1]}, (ff_v2d){xp[0], xp[1]},
                                   1, cancel) << (k - k0);
        else
            m |= (uint64_t)ff_sum1(b, K, k, xv[0], xp[0], 1, cancel) << (k - k0);
    }
    m &= go;
    for (k = k0; k < k1; k++) {
        int64_t sl;
        if (!((go >> (k - k0)) & 1)) continue;
        sl = es[k];
        cnt[k] -= 1;
        if (hslot[k] == sl) {
            FF_I32(b, FF_O_FMAX(K))[k] += 1;
            pend[n++] = ((int64_t)r << 16) | (k << 1);
        }
        if (lslot[k] == sl) {
            FF_I32(b, FF_O_FMIN(K))[k] += 1;
            pend[n++] = ((int64_t)r << 16) | (k << 1) | 1;
        }
        if (fslot[k] == sl) {
            /* the earliest bar left: the next held second exists (count > 0) */
            Py_ssize_t s2 = sl + 1 == D ? 0 : sl + 1;
            while (!present[s2 * NP + r]) s2 = s2 + 1 == D ? 0 : s2 + 1;
            fslot[k] = (uint16_t)s2;
            FF_F64(b, FF_O_OPEN(K))[k] = soh[s2 * NP + r].o;
        }
    }
    *npend = n;
    return m;
}

static inline uint64_t ff_evict_step(char *b, Py_ssize_t K, Py_ssize_t k0, Py_ssize_t k1,
                                     Py_ssize_t r, const uint8_t *present, const void *svp,
                                     const void *soh, Py_ssize_t NP, Py_ssize_t D,
                                     const int64_t *es, int64_t *pend, Py_ssize_t *npend,
                                     uint64_t *clear, double cancel)
{
    if (K == 3)         /* the default windows: every offset a constant */
        return ff_evict_k(b, 3, 0, 3, r, present, (const ff_vp *)svp, (const ff_ohlc *)soh,
                          NP, D, es, pend, npend, clear, cancel);
    return ff_evict_k(b, K, k0, k1, r, present, (const ff_vp *)svp, (const ff_ohlc *)soh,
                      NP, D, es, pend, npend, clear, cancel);
}

/* ---- the steady clock step of 3 windows (K = 3), a whole pass over the rows in C ----
 *
 * The common step: every window loses exactly one second (slot es[k]).  A row that
 * holds that second in every window and more than one bar in each (cnt > 1) takes
 * the straight-line kernel below: no per-lane go/clear bookkeeping, the max/min front
 * checks of all six lanes in one vector compare.  It computes exactly what ff_evict_k
 * computes for such a row (the same sums in the same order; the earliest bar of each
 * window is the evicted one, since that second is the window's first).  Every other
 * row is left to the engine's general code, marked in ``acc``. */

_Static_assert(FF_O_FSLOT(3) + 8 <= FF_RB(3), "ff_evict3_row: fslot[3] written as 8 bytes");
_Static_assert(FF_O_FMAX(3) == 232 && FF_O_FMIN(3) == 244 && FF_O_HSLOT(3) == 304
               && FF_O_LSLOT(3) == 310 && FF_O_OPEN(3) == 320
               && FF_O_LOW(3) == FF_O_HIGH(3) + 24,
               "ff_evict3_row: fmax[3], fmin[3] as six int32 lanes at 232, hslot[3], "
               "lslot[3] as six uint16 lanes at 304, padding to 320; high[3], low[3] "
               "as six double lanes");

typedef uint16_t ff_v8u __attribute__((vector_size(16)));
typedef int16_t ff_v8s __attribute__((vector_size(16)));
typedef int32_t ff_v4i __attribute__((vector_size(16)));
typedef int32_t ff_v2si __attribute__((vector_size(8)));

/* For windows mask m (bit k: window k): -1 in 16-bit lanes k and k + 3, k in m */
static const ff_v8s ff_ev3_sixm[8] = {
    {0, 0, 0, 0, 0, 0, 0, 0}, {-1, 0, 0, -1, 0, 0, 0, 0}, {0, -1, 0, 0, -1, 0, 0, 0},
    {-1, -1, 0, -1, -1, 0, 0, 0}, {0, 0, -1, 0, 0, -1, 0, 0}, {-1, 0, -1, -1, 0, -1, 0, 0},
    {0, -1, -1, 0, -1, -1, 0, 0}, {-1, -1, -1, -1, -1, -1, 0, 0}};

/* The constants of one pass (see ff_evict3_pass). */
typedef struct {
    const ff_vp *vp0, *vp1, *vp2;       /* (volume, pv) rows of the evicted slots es[k] */
    const ff_ohlc *so0, *so1, *so2;     /* (open, ...) rows of the slots after them, nx[k] */
    const uint8_t *present;
    const ff_ohlc *soh;
    Py_ssize_t NP, D, nx0, nx1, nx2, kmin;
    ff_v8u pat;                         /* es[0..2], es[0..2], 0, 0 as 16-bit lanes */
    ff_v8s six;                         /* -1 in the six lanes of pat, 0 in the others */
    const ff_v8s *sixm;                 /* ff_ev3_sixm */
    uint64_t fsl;                       /* nx0, nx1, nx2 as fslot[0..2] (and 0) */
    double cancel;
} ff_ev3;

/* Bit l of the result: 16-bit lane l of eq (each 0 or -1) is set, l < 8 */
static inline unsigned ff_lanebits(ff_v8s eq)
{
#if defined(__SSE2__)
    typedef char ff_v16c __attribute__((vector_size(16)));
    const ff_v8s zero = {0, 0, 0, 0, 0, 0, 0, 0};
    return (unsigned)__builtin_ia32_pmovmskb128((ff_v16c)__builtin_ia32_packsswb128(eq, zero));
#else
    unsigned m = 0, l;
    for (l = 0; l < 8; l++) m |= (unsigned)(eq[l] & 1) << l;
    return m;
#endif
}

/* Run-time dispatch: the pass below is compiled twice, for any x86-64 (SSE2) and with
 * AVX2 enabled (chosen once, by CPUID, on the first pass).  Both run the same 16-byte
 * vector code; the AVX2 build gets VEX encodings (three operands: none of the register
 * copies two-operand SSE needs).  No 32-byte (ymm) operation is used: measured, the
 * three windows' sums as one 4-lane ymm operation (masked loads and stores) cut the
 * pass's instructions by a third but made the step at 1,000 rows 1.04-1.15x slower, and
 * the upserts after it too (the core's 256-bit state).  Numbers are bit-for-bit the
 * same: the same IEEE operations in the same order, no FMA (target "avx2" does not
 * enable it, so GCC cannot contract). */
#if defined(__GNUC__) && defined(__x86_64__)
#define FF_EV3_AVX2 1
#define FF_AVX2 __attribute__((target("avx2")))
#else
#define FF_EV3_AVX2 0
#endif

/* (float) of two doubles, in a 16-byte operation for either build (GCC would widen
   __builtin_convertvector of two lanes to a ymm operation under AVX) */
static inline ff_v2f ff_cvt2f(ff_v2d x)
{
#if defined(__SSE2__)
    typedef float ff_v4fx __attribute__((vector_size(16)));
    ff_v4fx f = __builtin_ia32_cvtpd2ps(x);
    return __builtin_shufflevector(f, f, 0, 1);
#else
    return __builtin_convertvector(x, ff_v2f);
#endif
}

/* A field's two lanes A and B at byte offset off: with adj, lanes k and k + 1 of block ba
 * (one 16- or 8-byte access); without, lane k of blocks ba and bb (two accesses). */
FF_INLINE ff_v2d ff_ldp(const char *ba, const char *bb, Py_ssize_t off, const int adj)
{
    if (adj)
        return ff_ld2((const double *)(ba + off));
    return (ff_v2d){*(const double *)(ba + off), *(const double *)(bb + off)};
}
FF_INLINE void ff_stp(char *ba, char *bb, Py_ssize_t off, const int adj, ff_v2d v)
{
    if (adj) {
        ff_st2((double *)(ba + off), v);
    } else {
        *(double *)(ba + off) = v[0];
        *(double *)(bb + off) = v[1];
    }
}
FF_INLINE ff_v2f ff_ldpf(const char *ba, const char *bb, Py_ssize_t off, const int adj)
{
    if (adj)
        return ff_ld2f((const float *)(ba + off));
    return (ff_v2f){*(const float *)(ba + off), *(const float *)(bb + off)};
}
FF_INLINE void ff_stpf(char *ba, char *bb, Py_ssize_t off, const int adj, ff_v2f v)
{
    if (adj) {
        ff_st2f((float *)(ba + off), v);
    } else {
        *(float *)(ba + off) = v[0];
        *(float *)(bb + off) = v[1];
    }
}

/* Two lanes of 3-window blocks at once: lane A (block ba, window k) and lane B (block bb,
 * window k + adj): with adj, lanes k and k + 1 of one block (bb == ba, 16-byte loads and
 * stores); without, window k of two blocks.  Each lane loses the (volume, pv) of its cell
 * (pa, pb): exactly ff_sum1's operations on it (with the negated cell), check on.  Returns
 * the 2-bit mask of the lanes whose sums cancelled.  With ba == bb and adj == 0 both
 * lanes are the same (one lane, stored twice with the same values). */
FF_INLINE unsigned ff_ev3_pair(char *ba, char *bb, Py_ssize_t k, const int adj,
                               const ff_vp *pa, const ff_vp *pb, double cancel)
{
    const Py_ssize_t o8 = 8 * k, o4 = 4 * k;
    const ff_v2d nan2 = {NAN, NAN}, sign = {-0.0, -0.0};
    ff_v2d ca, cb, x, y, s, cc, t, z, e, u, q;
    ff_v2f fa, fp;
    ff_v2i zero, cx;
    /* the addends: the negated (volume, pv) cells pa (lane A) and pb (lane B) */
    memcpy(&ca, pa, 16); memcpy(&cb, pb, 16);
    x = (ff_v2d)((ff_v2i)__builtin_shufflevector(ca, cb, 0, 2) ^ (ff_v2i)sign);
    y = (ff_v2d)((ff_v2i)__builtin_shufflevector(ca, cb, 1, 3) ^ (ff_v2i)sign);
    s = ff_ldp(ba, bb, FF_O_VOL(3) + o8, adj); cc = ff_ldp(ba, bb, FF_O_VC(3) + o8, adj);
    fa = ff_ldpf(ba, bb, FF_O_VA(3) + o4, adj) + ff_cvt2f(ff_abs2(x));
    fp = ff_ldpf(ba, bb, FF_O_PA(3) + o4, adj) + ff_cvt2f(ff_abs2(y));
    t = s + x; z = t - s; e = (s - (t - z)) + (x - z);
    cc = cc + e;
    u = t + cc; z = u - t; cc = (t - (u - z)) + (cc - z);
    ff_stp(ba, bb, FF_O_VOL(3) + o8, adj, u); ff_stp(ba, bb, FF_O_VC(3) + o8, adj, cc);
    s = ff_ldp(ba, bb, FF_O_PS(3) + o8, adj);
    t = s + y; z = t - s; e = (s - (t - z)) + (y - z);
    q = ff_ldp(ba, bb, FF_O_PC(3) + o8, adj) + e;
    ff_stp(ba, bb, FF_O_PS(3) + o8, adj, t); ff_stp(ba, bb, FF_O_PC(3) + o8, adj, q);
    ff_stpf(ba, bb, FF_O_VA(3) + o4, adj, fa); ff_stpf(ba, bb, FF_O_PA(3) + o4, adj, fp);
    s = t + q;
    zero = (u == 0.0);
    q = s / u;
    q = (ff_v2d)(((ff_v2i)q & ~zero) | ((ff_v2i)nan2 & zero));
    ff_stp(ba, bb, FF_O_VWAP(3) + o8, adj, q);
    cx = (ff_abs2(u) < cancel * __builtin_convertvector(fa, ff_v2d))
         | (ff_abs2(s) < cancel * __builtin_convertvector(fp, ff_v2d));
#if defined(__SSE2__)
    return (unsigned)__builtin_ia32_movmskpd((ff_v2d)cx);
#else
    return (unsigned)(cx[0] & 1) | (unsigned)(cx[1] & 2);
#endif
}


/* Window 2's sums of one steady eviction, for rows ra, rb (blocks ba, bb) at once:
 * returns bit 0 (row ra) and bit 1 (row rb) if their sums cancelled.  ba == bb, ra == rb:
 * one row. */
FF_INLINE unsigned ff_ev3_lane2(char *ba, char *bb, const ff_vp *pa, const ff_vp *pb,
                                double cancel)
{
    return ff_ev3_pair(ba, bb, 2, 0, pa, pb, cancel);
}

/* Row r (block b) loses second es[k] from window k, k < 3: the row holds it in every
 * window (the caller checked presence) and, if ``nextall``, the second after it too.
 * Counts are checked here: returns 0, having changed nothing, when some count is <= 1
 * (the count of the shortest window, kmin, which holds a subset of every other's bars).
 * The max/min fronts that leave are moved on (their index); pend gets r << 3 | l for
 * each (front lane l: window l % 3, the min deque if l >= 3), for the caller to read
 * their new slot and value.  Window 2's sums are left to the caller (ff_ev3_lane2).
 * Returns 1 | the cancelled lanes of windows 0 and 1 << 1. */
FF_INLINE unsigned ff_evict3_row(char *b, Py_ssize_t r, const ff_ev3 *E, int nextall,
                                 int64_t *pend, Py_ssize_t *npend)
{
    int64_t *cnt = FF_I64(b, FF_O_CNT(3));
    uint16_t *fslot = FF_U16(b, FF_O_FSLOT(3));
    double *open = FF_F64(b, FF_O_OPEN(3));
    unsigned m;
    Py_ssize_t k;
    if (cnt[E->kmin] <= 1)      /* the shortest window holds the fewest bars */
        return 0;
    cnt[0] -= 1; cnt[1] -= 1; cnt[2] -= 1;
    {
        /* windows 0 and 1; window 2 is the caller's, two rows at once (ff_ev3_lane2) */
        m = ff_ev3_pair(b, b, 0, 1, E->vp0 + r, E->vp1 + r, E->cancel);
    }
    {
        /* the max/min fronts that leave (their slot is the evicted one) move on: six
           16-bit lane compares, the int32 front indices incremented where equal */
        ff_v8s eq;
        ff_v4i f;
        ff_v2si g;
        ff_v8u fr;
        unsigned bits;
        ff_v4i hi;
        memcpy(&fr, b + FF_O_HSLOT(3), 16);
        eq = (ff_v8s)(fr == E->pat) & E->six;
        memcpy(&f, b + FF_O_FMAX(3), 16);
        memcpy(&g, b + FF_O_FMAX(3) + 16, 8);
        /* a 16-bit lane of eq is 0 or -1, so two copies of it are that int32: lanes 0-3
           and 4-5 of eq widened by unpacking eq with itself */
        f -= (ff_v4i)__builtin_shufflevector(eq, eq, 0, 0, 1, 1, 2, 2, 3, 3);
        hi = (ff_v4i)__builtin_shufflevector(eq, eq, 4, 4, 5, 5, 6, 6, 7, 7);
        g -= __builtin_shufflevector(hi, hi, 0, 1);
        memcpy(b + FF_O_FMAX(3), &f, 16);
        memcpy(b + FF_O_FMAX(3) + 16, &g, 8);
        bits = ff_lanebits(eq);
        /* one pend entry per moved front (rarely more than one per row) */
        pend[*npend] = ((int64_t)r << 3) | (__builtin_ctz(bits | 0x100) & 7);
        *npend += bits != 0;
        if (bits & (bits - 1)) {
            bits &= bits - 1;
            do {
                pend[(*npend)++] = ((int64_t)r << 3) | __builtin_ctz(bits);
                bits &= bits - 1;
            } while (bits);
        }
    }
    /* the earliest bar (the evicted one) left every window: the next held second */
    if (nextall) {
        memcpy(fslot, &E->fsl, 8);      /* fslot[0..2] and 2 bytes of the block's padding */
        open[0] = E->so0[r].o; open[1] = E->so1[r].o; open[2] = E->so2[r].o;
    } else {
        const Py_ssize_t nx[3] = {E->nx0, E->nx1, E->nx2};
        for (k = 0; k < 3; k++) {
            Py_ssize_t s2 = nx[k], NP = E->NP, D = E->D;    /* count > 1: it exists */
            while (!E->present[s2 * NP + r]) s2 = s2 + 1 == D ? 0 : s2 + 1;
            fslot[k] = (uint16_t)s2;
            open[k] = E->soh[s2 * NP + r].o;
        }
    }
    return 1 | m << 1;
}

/* The addend cell of a window that loses nothing in a row the pass takes: its negation
 * is +0.0, the zero addend ff_evict_k gives such a lane (it runs the sums of every lane
 * of a row that loses something; adding +0.0 is kept, not skipped, so the result is
 * bit-for-bit the general code's in every state, signed zeros included). */
static const ff_vp ff_ev3_zcell = {-0.0, -0.0};

/* Row r (block b) loses second es[k] from the windows k in m (0 < m < 7: the others
 * lose nothing, the clock's fill phase: a row holds the evicted second of the short
 * windows but not yet that of the long ones; or es[k] == -1).  nb: bit k set if the row
 * also holds the second after es[k].  Exactly ff_evict_k's operations on such a row:
 * every lane's sums (the zero addend on the others), counts, fronts, fslot and open of
 * the lanes in m only.  Returns 0, having changed nothing, when some count of m is
 * <= 1 (the general code clears that window); else 1 | cancelled lanes of windows 0
 * and 1 (in m) << 1.  Window 2's sums are the caller's, as for ff_evict3_row. */
FF_INLINE unsigned ff_evict3_part(char *b, Py_ssize_t r, const ff_ev3 *E, unsigned m,
                                  unsigned nb, int64_t *pend, Py_ssize_t *npend)
{
    int64_t *cnt = FF_I64(b, FF_O_CNT(3));
    uint16_t *fslot = FF_U16(b, FF_O_FSLOT(3));
    double *open = FF_F64(b, FF_O_OPEN(3));
    unsigned mc;
    Py_ssize_t k;
    if (((m & 1) && cnt[0] <= 1) || ((m & 2) && cnt[1] <= 1) || ((m & 4) && cnt[2] <= 1))
        return 0;
    cnt[0] -= m & 1; cnt[1] -= (m >> 1) & 1; cnt[2] -= (m >> 2) & 1;
    mc = ff_ev3_pair(b, b, 0, 1, (m & 1) ? E->vp0 + r : &ff_ev3_zcell,
                     (m & 2) ? E->vp1 + r : &ff_ev3_zcell, E->cancel) & m;
    {
        ff_v8s eq;
        ff_v4i f, hi;
        ff_v2si g;
        ff_v8u fr;
        unsigned bits;
        memcpy(&fr, b + FF_O_HSLOT(3), 16);
        eq = (ff_v8s)(fr == E->pat) & E->sixm[m];
        memcpy(&f, b + FF_O_FMAX(3), 16);
        memcpy(&g, b + FF_O_FMAX(3) + 16, 8);
        f -= (ff_v4i)__builtin_shufflevector(eq, eq, 0, 0, 1, 1, 2, 2, 3, 3);
        hi = (ff_v4i)__builtin_shufflevector(eq, eq, 4, 4, 5, 5, 6, 6, 7, 7);
        g -= __builtin_shufflevector(hi, hi, 0, 1);
        memcpy(b + FF_O_FMAX(3), &f, 16);
        memcpy(b + FF_O_FMAX(3) + 16, &g, 8);
        bits = ff_lanebits(eq);
        while (bits) {
            pend[(*npend)++] = ((int64_t)r << 3) | __builtin_ctz(bits);
            bits &= bits - 1;
        }
    }
    {
        const Py_ssize_t nx[3] = {E->nx0, E->nx1, E->nx2};
        const ff_ohlc *so[3] = {E->so0, E->so1, E->so2};
        for (k = 0; k < 3; k++) {
            Py_ssize_t s2, NP, D;
            if (!((m >> k) & 1))
                continue;
            if ((nb >> k) & 1) {
                fslot[k] = (uint16_t)nx[k];
                open[k] = so[k][r].o;
                continue;
            }
            s2 = nx[k]; NP = E->NP; D = E->D;       /* count > 1: it exists */
            while (!E->present[s2 * NP + r]) s2 = s2 + 1 == D ? 0 : s2 + 1;
            fslot[k] = (uint16_t)s2;
            open[k] = E->soh[s2 * NP + r].o;
        }
    }
    return 1 | mc << 1;
}

/* Window 2's sums wait for the next row the pass's kernels take and are done with its,
 * two rows in one operation (rows are independent).  A row that waits: its block (NULL:
 * none), its window-2 cell, its kernel result, its byte in the word, and whether window
 * 2 evicts in it. */
typedef struct {
    char *b;
    const ff_vp *v2;
    unsigned x, m2;
    int j;
} ff_lane2_wait;

/* Row (block b, window-2 cell v2, kernel result x != 0, byte j; m2: 1 if window 2 loses
 * the second in it) after the rows before it in the word: waits, or goes with the row
 * waiting.  Returns the word's marks for the rows finished (see ff_evict3_pass_t). */
FF_INLINE uint64_t ff_lane2_take(ff_lane2_wait *w, char *b, const ff_vp *v2, unsigned x,
                                 int j, unsigned m2, double cancel)
{
    uint64_t slow = 0;
    unsigned c, px;
    if (!w->b) {
        w->b = b; w->v2 = v2; w->x = x; w->j = j; w->m2 = m2;
        return 0;
    }
    c = ff_ev3_lane2(w->b, b, w->v2, v2, cancel);
    px = w->x | (c & w->m2) << 3;
    x |= ((c >> 1) & m2) << 3;
    if (px != 1)
        slow |= (uint64_t)(0x80 | (px >> 1)) << w->j;
    if (x != 1)
        slow |= (uint64_t)(0x80 | (x >> 1)) << j;
    w->b = NULL;
    return slow;
}

/* The row still waiting at the end of the word, alone; returns its marks. */
FF_INLINE uint64_t ff_lane2_flush(ff_lane2_wait *w, double cancel)
{
    unsigned px;
    if (!w->b)
        return 0;
    px = w->x | (ff_ev3_lane2(w->b, w->b, w->v2, w->v2, cancel) & w->m2) << 3;
    w->b = NULL;
    return px != 1 ? (uint64_t)(0x80 | (px >> 1)) << w->j : 0;
}

/* The rows of one 8-row word that ff_evict3_part takes (part: their bytes' low bits;
 * a_k, n_k: the word's presence bits of es[k] and of the second after it), window 2's
 * sums two rows at a time as in the pass (the zero cell where window 2 loses nothing).
 * Returns the word's marks (see ff_evict3_pass_t); *np_ += the rows done. */
FF_INLINE uint64_t ff_evict3_parts(char *blk, Py_ssize_t r0, uint64_t w, uint64_t a0,
                                   uint64_t a1, uint64_t a2, uint64_t b0, uint64_t b1,
                                   uint64_t b2, const ff_ev3 *E, int64_t *pend,
                                   Py_ssize_t *n, Py_ssize_t *np_)
{
    uint64_t slow = 0;
    ff_lane2_wait wait = {NULL, NULL, 0, 0, 0};
    while (w) {
        int j = __builtin_ctzll(w);
        Py_ssize_t r = r0 + (j >> 3);
        char *b = blk + r * FF_RB(3);
        unsigned x;
        unsigned mk = (unsigned)((a0 >> j) & 1) | (unsigned)((a1 >> j) & 1) << 1
                      | (unsigned)((a2 >> j) & 1) << 2;
        unsigned nb = (unsigned)((b0 >> j) & 1) | (unsigned)((b1 >> j) & 1) << 1
                      | (unsigned)((b2 >> j) & 1) << 2;
        w &= w - 1;
        x = ff_evict3_part(b, r, E, mk, nb, pend, n);
        *np_ += x != 0;
        if (!x)
            slow |= (uint64_t)1 << j;
        else
            slow |= ff_lane2_take(&wait, b, (mk >> 2) ? E->vp2 + r : &ff_ev3_zcell, x, j,
                                  mk >> 2, E->cancel);
    }
    return slow | ff_lane2_flush(&wait, E->cancel);
}

/* The deque rings, as the engine lays them out: entry i of row r's ring is
 * q[r * C + (i & mask)] (ff_dqe: the slot and the key of the value, see above). */
typedef struct {
    const ff_dqe *qmax, *qmin;
    Py_ssize_t C, mask;
} ff_rings;

static inline const ff_dqe *ff_ring_entry(const ff_rings *q, int min, Py_ssize_t r, int64_t i)
{
    return (min ? q->qmin : q->qmax) + r * q->C + (i & q->mask);
}

/* pend entry x = r << 3 | l (see ff_evict3_row): prefetch the ring line of the new front */
static inline void ff_front_prefetch(const char *blk, Py_ssize_t RB, const ff_rings *q, int64_t x)
{
    Py_ssize_t r = x >> 3;
    unsigned l = x & 7;
    FF_PREFETCH_READ(ff_ring_entry(q, l >= 3, r, FF_I32(blk + r * RB, FF_O_FMAX(3))[l]));
}

/* ... and read its slot and value: the value from the key when it is exact, else from
 * the store (one more line).  Entries are independent: a loop over them overlaps the
 * misses. */
static inline void ff_front_read(char *blk, Py_ssize_t RB, const ff_rings *q, const ff_ohlc *soh,
                                 Py_ssize_t NP, int64_t x)
{
    Py_ssize_t r = x >> 3;
    unsigned l = x & 7;
    char *b = blk + r * RB;
    const ff_dqe *e = ff_ring_entry(q, l >= 3, r, FF_I32(b, FF_O_FMAX(3))[l]);
    uint16_t sl = e->slot;
    uint32_t key = e->key;
    double v;
    FF_U16(b, FF_O_HSLOT(3))[l] = sl;          /* lanes 3-5: lslot[0..2] */
    if (key & FF_KEY_GRID)
        v = ff_grid_value(key & ~FF_KEY_GRID);
    else
        v = FF_HL(soh + r, NP, sl, l < 3);
    FF_F64(b, FF_O_HIGH(3))[l] = v;            /* lanes 3-5: low[0..2] */
}

/* the pass prefetches the store streams of the rows this many 8-row words ahead (4 and
 * 8 measured alike; none: 1.2x slower at 12,000 rows) */
#define FF_PF_WORDS 4

/* The eviction pass of a one-second clock step of 3 windows, each losing one second
 * (es[k] >= 0: its slot; kmin: the shortest window), over rows [0, 8 * nw) of blocks
 * blk (RB == FF_RB(3) bytes each, used as that constant; 8 * nw a multiple of 64, the
 * presence rows 8-byte aligned).  Rows the kernel above takes are done here, their front
 * moves too (in pend, as scratch: the new fronts' ring lines are prefetched after each 8
 * rows and read after the pass, in one loop whose loads overlap).  acc (all zero on
 * entry: the caller zeroes each word it reads) gets, per row of word c (one byte per
 * row, the presence layout): 0 (done or nothing to evict), 1 (the engine's general
 * eviction must do this row) or 0x80 | the lanes whose sums cancelled (done; the engine
 * recomputes those sums exactly); only words with a marked row are written.  Returns
 * the number of words written. */
FF_INLINE Py_ssize_t ff_evict3_pass_t(char *blk, Py_ssize_t RB, Py_ssize_t nw,
                                      const uint8_t *present, const ff_vp *svp,
                                      const ff_ohlc *soh, Py_ssize_t NP, Py_ssize_t D,
                                      const int64_t *es, Py_ssize_t kmin, const ff_rings *q,
                                      int64_t *pend, uint64_t *acc, double cancel,
                                      const uint8_t *zero, Py_ssize_t *npart)
{
    const uint64_t *p0, *p1, *p2, *n0, *n1, *n2;
    Py_ssize_t k, c, n = 0, j0 = 0, nslow = 0, ex[3], np_ = 0;
    ff_ev3 E;
    /* a window losing nothing (es[k] == -1): its presence rows are the zero row */
    for (k = 0; k < 3; k++)
        ex[k] = es[k] >= 0 ? es[k] : 0;
    p0 = (const uint64_t *)(es[0] >= 0 ? present + ex[0] * NP : zero);
    p1 = (const uint64_t *)(es[1] >= 0 ? present + ex[1] * NP : zero);
    p2 = (const uint64_t *)(es[2] >= 0 ? present + ex[2] * NP : zero);
    E.NP = NP; E.D = D; E.present = present; E.soh = soh; E.cancel = cancel; E.kmin = kmin;
    E.nx0 = ex[0] + 1 == D ? 0 : ex[0] + 1;
    E.nx1 = ex[1] + 1 == D ? 0 : ex[1] + 1;
    E.nx2 = ex[2] + 1 == D ? 0 : ex[2] + 1;
    E.vp0 = svp + ex[0] * NP; E.vp1 = svp + ex[1] * NP; E.vp2 = svp + ex[2] * NP;
    E.so0 = soh + E.nx0 * NP; E.so1 = soh + E.nx1 * NP; E.so2 = soh + E.nx2 * NP;
    for (k = 0; k < 3; k++)
        E.pat[k] = E.pat[k + 3] = (uint16_t)ex[k];
    E.pat[6] = E.pat[7] = 0;
    for (k = 0; k < 8; k++)
        E.six[k] = k < 6 ? -1 : 0;
    E.sixm = ff_ev3_sixm;
    E.fsl = (uint64_t)E.nx0 | (uint64_t)E.nx1 << 16 | (uint64_t)E.nx2 << 32;
    n0 = (const uint64_t *)(present + E.nx0 * NP);
    n1 = (const uint64_t *)(present + E.nx1 * NP);
    n2 = (const uint64_t *)(present + E.nx2 * NP);
    for (c = 0; c < nw; c++) {
        uint64_t a0, a1, a2, all, part, slow;
        if (!(c & 7)) {
            /* skip 64 rows holding none of the evicted seconds at once (an engine's
               capacity is often far above the rows it uses; nw is a multiple of 8) */
            ff_v2i z = {0, 0};
            for (k = 0; k < 8; k += 2) {
                ff_v2i x0, x1, x2;
                memcpy(&x0, p0 + c + k, 16); memcpy(&x1, p1 + c + k, 16);
                memcpy(&x2, p2 + c + k, 16);
                z |= x0 | x1 | x2;
            }
            if (!(z[0] | z[1])) {
                c += 7;
                continue;
            }
        }
        a0 = p0[c]; a1 = p1[c]; a2 = p2[c];
        all = a0 & a1 & a2;
        part = (a0 | a1 | a2) & ~all;
        slow = 0;
        if (c + FF_PF_WORDS < nw && (p0[c + FF_PF_WORDS] | p2[c + FF_PF_WORDS])) {
            /* the store streams of the rows FF_PF_WORDS words ahead: (volume, pv) of the
               evicted slots, (open, ...) of the slots after them */
            Py_ssize_t ra = 8 * (c + FF_PF_WORDS);
            const char *s0 = (const char *)&E.vp0[ra], *s1 = (const char *)&E.vp1[ra],
                       *s2 = (const char *)&E.vp2[ra];
            const char *o0 = (const char *)&E.so0[ra], *o1 = (const char *)&E.so1[ra],
                       *o2 = (const char *)&E.so2[ra];
            FF_PREFETCH_READ(s0); FF_PREFETCH_READ(s0 + 64);
            FF_PREFETCH_READ(s1); FF_PREFETCH_READ(s1 + 64);
            FF_PREFETCH_READ(s2); FF_PREFETCH_READ(s2 + 64);
            for (k = 0; k < 256; k += 64) {
                FF_PREFETCH_READ(o0 + k); FF_PREFETCH_READ(o1 + k);
                FF_PREFETCH_READ(o2 + k);
            }
        }
        if (all | part) {
            Py_ssize_t r0 = 8 * c;
            uint64_t w = all, nall = all & n0[c] & n1[c] & n2[c];
            ff_lane2_wait wait = {NULL, NULL, 0, 0, 0};
            while (w) {
                int j = __builtin_ctzll(w);
                Py_ssize_t r = r0 + (j >> 3);
                char *b = blk + r * FF_RB(3);
                unsigned x;
                w &= w - 1;
                x = ff_evict3_row(b, r, &E, (int)((nall >> j) & 1), pend, &n);
                if (!x)
                    slow |= (uint64_t)1 << j;
                else
                    slow |= ff_lane2_take(&wait, b, E.vp2 + r, x, j, 1, cancel);
            }
            slow |= ff_lane2_flush(&wait, cancel);
            if (part)
                slow |= ff_evict3_parts(blk, r0, part, a0, a1, a2, n0[c], n1[c], n2[c],
                                        &E, pend, &n, &np_);
            for (; j0 < n; j0++)
                ff_front_prefetch(blk, FF_RB(3), q, pend[j0]);
        }
        if (slow) {
            acc[c] = slow;
            nslow++;
        }
    }
    for (j0 = 0; j0 < n; j0++)
        ff_front_read(blk, FF_RB(3), q, soh, NP, pend[j0]);
    *npart += np_;
    return nslow;
}

#define FF_EV3_ARGS char *blk, Py_ssize_t RB, Py_ssize_t nw, const uint8_t *present, \
    const ff_vp *svp, const ff_ohlc *soh, Py_ssize_t NP, Py_ssize_t D, const int64_t *es, \
    Py_ssize_t kmin, const ff_rings *q, int64_t *pend, uint64_t *acc, double cancel, \
    const uint8_t *zero, Py_ssize_t *npart
#define FF_EV3_PASS_ARGS blk, RB, nw, present, svp, soh, NP, D, es, kmin, q, pend, acc, cancel, \
    zero, npart

static Py_ssize_t __attribute__((noinline)) ff_evict3_pass_sse2(FF_EV3_ARGS)
{
    return ff_evict3_pass_t(FF_EV3_PASS_ARGS);
}

#if FF_EV3_AVX2
static Py_ssize_t __attribute__((noinline)) FF_AVX2 ff_evict3_pass_avx2(FF_EV3_ARGS)
{
    return ff_evict3_pass_t(FF_EV3_PASS_ARGS);
}
#endif

/* 1: the CPU runs AVX2 (asked once), 0: not, -1: not asked yet */
static int ff_ev3_isa = -1;

/* The pass's copy from now on (a test hook: engine._set_evict_isa): 0 the SSE2 copy,
 * 1 the AVX2 copy, -1 the CPU's choice (asked on the next pass).  Returns the previous
 * setting (-1, 0 or 1), or -2 (nothing changed) for 1 on a CPU (or build) without AVX2. */
static int ff_ev3_set_isa(int isa)
{
    int prev = ff_ev3_isa;
    if (isa == 1) {
#if FF_EV3_AVX2
        if (!__builtin_cpu_supports("avx2"))
            return -2;
#else
        return -2;
#endif
    }
    ff_ev3_isa = isa;
    return prev;
}

static Py_ssize_t ff_evict3_pass(FF_EV3_ARGS)
{
#if FF_EV3_AVX2
    if (ff_ev3_isa < 0)
        ff_ev3_isa = __builtin_cpu_supports("avx2") ? 1 : 0;
    if (ff_ev3_isa)
        return ff_evict3_pass_avx2(FF_EV3_PASS_ARGS);
#endif
    return ff_evict3_pass_sse2(FF_EV3_PASS_ARGS);
}

#endif
