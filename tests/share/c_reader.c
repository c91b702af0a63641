/* A minimal C reader of a fastfeed shared-memory segment (docs/SHARED_MEMORY.md).
 *
 *   cc -O2 -I ext tests/share/c_reader.c -o c_reader
 *   ./c_reader NAME SYMBOL [WINDOW]        -> "SYMBOL WINDOW vwap count T generation"
 *
 * Maps the segment read-only, finds the symbol's row and reads its record of the
 * window under the sequence lock (retrying while the writer writes).  Exit status:
 * 0 printed, 1 usage or system error, 2 not a live segment, 3 no such symbol or window.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ffshm.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s NAME SYMBOL [WINDOW]\n", argv[0]);
        return 1;
    }
    char path[256];
    snprintf(path, sizeof path, "/%s", argv[1][0] == '/' ? argv[1] + 1 : argv[1]);
    const char *symbol = argv[2];
    uint32_t window = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 10) : 60;

    int fd = shm_open(path, O_RDONLY, 0);
    if (fd < 0) { perror("shm_open"); return 1; }
    struct stat st;
    if (fstat(fd, &st) != 0) { perror("fstat"); return 1; }
    if ((size_t)st.st_size < sizeof(ff_header)) { fprintf(stderr, "segment too small\n"); return 2; }
    const char *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) { perror("mmap"); return 1; }
    const ff_header *h = (const ff_header *)base;

    /* the identity fields are valid once magic is (the writer stores it last, release) */
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != FFSHM_MAGIC || h->version != FFSHM_VERSION
        || __atomic_load_n(&h->state, __ATOMIC_ACQUIRE) != FFSHM_STATE_LIVE) {
        fprintf(stderr, "not a live fastfeed segment (format %u)\n", FFSHM_VERSION);
        return 2;
    }
    uint32_t k = 0;
    while (k < h->n_windows && h->windows[k] != window) k++;
    if (k == h->n_windows) { fprintf(stderr, "no %us window\n", window); return 3; }
    const ff_symref *refs = (const ff_symref *)(base + h->off_symrefs);
    const char *heap = base + h->off_heap;
    const ff_rec *recs = (const ff_rec *)(base + h->off_windows + k * h->window_bytes);
    size_t len = strlen(symbol);

    for (;;) {
        uint64_t g1 = __atomic_load_n(&h->generation, __ATOMIC_ACQUIRE);
        if (g1 & 1) continue;                       /* a write is in progress */
        uint64_t n = h->n_symbols;
        int64_t T = h->T;
        int64_t row = -1;
        for (uint64_t r = 0; r < n && r < h->capacity; r++)   /* symbols never change */
            if (refs[r].length == len && memcmp(heap + refs[r].offset, symbol, len) == 0) { row = (int64_t)r; break; }
        ff_rec rec;
        if (row >= 0) memcpy(&rec, &recs[row], sizeof rec);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&h->generation, __ATOMIC_RELAXED) != g1) continue;   /* overlapped a write */
        if (row < 0) { fprintf(stderr, "no symbol %s\n", symbol); return 3; }
        printf("%s %u %.17g %lld %lld %llu\n", symbol, window, rec.vwap, (long long)rec.count,
               (long long)T, (unsigned long long)g1);
        return 0;
    }
}
