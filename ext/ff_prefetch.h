/* ff_prefetch.h -- the one prefetch of the extensions' C code.
 *
 * GCC treats __builtin_prefetch as free of side effects, so its interprocedural passes
 * delete every call to a function made of prefetches only: that silently removed the
 * engine's far prefetch from upsert for two rounds of tuning. The empty volatile asm
 * statement after each prefetch is a side effect GCC must keep, and with it the call
 * and the prefetch. Use these macros, never __builtin_prefetch directly.
 *
 * p: any pointer (not dereferenced; an address outside any mapping is harmless).
 */
#ifndef FF_PREFETCH_H
#define FF_PREFETCH_H

/* rw: 0 the line will be read, 1 written (a compile-time constant); locality 3: all
   cache levels */
#define FF_PREFETCH_FOR(p, rw) do { __builtin_prefetch((const void *)(p), (rw), 3); \
                                    __asm__ __volatile__("" : : "r"(p)); } while (0)
/* a line about to be written (or read, then written) */
#define FF_PREFETCH(p) FF_PREFETCH_FOR(p, 1)
/* a line about to be read only */
#define FF_PREFETCH_READ(p) FF_PREFETCH_FOR(p, 0)

#endif
