/* fastfeed shared-memory segment, format version 1.
 *
 * One named POSIX shared-memory object (shm_open, mode 0600; on Linux the file
 * /dev/shm/<name>) written by one process and read by any number of others.  The
 * byte layout below is the contract (docs/SHARED_MEMORY.md explains every field and
 * the protocols); both the Python package (ext/shm.pyx) and C readers include this
 * file.  All integers and doubles are native little-endian (x86-64, aarch64).
 *
 *   offset 0                 ff_header      (4096 B)  identity, clock, seqlock, counters
 *   offset 4096              ff_readers     (4096 B)  the only bytes readers write
 *   header.off_symrefs       ff_symref[capacity]      row -> (offset, length) in the heap
 *   header.off_heap          char[heap_bytes]         UTF-8 symbols, back to back
 *   header.off_info          char[info_bytes]         JSON of the last completed second
 *   header.off_stats         char[stats_bytes]        JSON of the stats document
 *   header.off_windows       ff_rec[n_windows][capacity]  one block per window
 */
#ifndef FFSHM_H
#define FFSHM_H

#include <stddef.h>
#include <stdint.h>

#define FFSHM_MAGIC         0x3130304d48534646ULL  /* the bytes "FFSHM001" */
#define FFSHM_VERSION       1u
#define FFSHM_PAGE          4096u
#define FFSHM_MAX_WINDOWS   16u
#define FFSHM_MAX_COUNTERS  64u
#define FFSHM_NAME_BYTES    32u
#define FFSHM_READER_SLOTS  126u

/* ff_header.state */
#define FFSHM_STATE_INIT    0u   /* being created: not yet readable */
#define FFSHM_STATE_LIVE    1u   /* a writer owns it and beats */
#define FFSHM_STATE_CLOSED  2u   /* the writer closed it (it is about to be unlinked) */

/* ff_second.reason */
#define FFSHM_REASON_NONE      0u
#define FFSHM_REASON_COMPLETE  1u
#define FFSHM_REASON_QUIET     2u
#define FFSHM_REASON_NEXT      3u
#define FFSHM_REASON_OTHER     4u

/* ff_reader_slot.waiting bits */
#define FFSHM_WAIT_UPDATE   1u
#define FFSHM_WAIT_SECOND   2u

/* One instrument's window as of T: 64 bytes, one cache line. */
typedef struct ff_rec {
    double  open, high, low, close;   /* NaN when count == 0 */
    double  volume;                   /* 0 when count == 0 */
    double  vwap;                     /* sum(pv) / sum(volume); NaN when volume == 0 */
    int64_t count;                    /* bars in the window */
    uint64_t updated;                 /* generation of the publish that last wrote it */
} ff_rec;

typedef struct ff_symref {
    uint32_t offset;                  /* into the heap */
    uint32_t length;                  /* bytes of UTF-8, no terminator */
} ff_symref;

/* The last completed second (issue "completed second"); T = -1 until one is published. */
typedef struct ff_second {
    int64_t  T;                       /* the second, epoch s */
    uint32_t reason;                  /* FFSHM_REASON_* */
    uint32_t _pad;
    int64_t  reported;                /* instruments that reported for T */
    int64_t  expected;                /* instruments expected for T */
    double   latency_us;              /* first bar of T received -> announced */
    double   since_last_bar_us;       /* last bar of T received -> announced */
    uint64_t count;                   /* seconds published so far */
    int64_t  published_ns;            /* CLOCK_REALTIME when published */
    uint64_t info_len;                /* bytes of JSON at off_info (the whole info dict) */
} ff_second;

typedef struct ff_header {
    /* -- identity: written once before `magic`, never changed ------------------- 0 */
    uint64_t magic;                   /*   0  FFSHM_MAGIC, stored last (release) */
    uint32_t version;                 /*   8  FFSHM_VERSION */
    uint32_t header_bytes;            /*  12  sizeof(ff_header) = 4096 */
    uint64_t epoch;                   /*  16  creation time, ns since the Unix epoch */
    uint64_t segment_bytes;           /*  24  size of the whole object */
    int64_t  writer_pid;              /*  32 */
    uint32_t state;                   /*  40  FFSHM_STATE_* (atomic) */
    uint32_t n_windows;               /*  44  K */
    uint64_t capacity;                /*  48  rows allocated per window */
    uint64_t depth;                   /*  56  seconds of bars the writer's engine keeps */
    uint32_t windows[FFSHM_MAX_WINDOWS];  /*  64  window lengths in seconds, K used */
    char     feed[FFSHM_NAME_BYTES];  /* 128  feed name, NUL-padded */
    uint64_t off_symrefs;             /* 160 */
    uint64_t off_heap;                /* 168 */
    uint64_t heap_bytes;              /* 176 */
    uint64_t off_windows;             /* 184  window k at off_windows + k * window_bytes */
    uint64_t window_bytes;            /* 192  capacity * 64, page-rounded */
    uint64_t off_info;                /* 200 */
    uint64_t info_bytes;              /* 208 */
    uint64_t off_stats;               /* 216 */
    uint64_t stats_bytes;             /* 224 */
    uint32_t n_counters;              /* 232 */
    uint32_t n_reader_slots;          /* 236 */
    uint64_t heartbeat_period_ns;     /* 240 */
    uint64_t _pad0;                   /* 248 */
    /* -- heartbeat: its own cache line, written by the writer's beat thread ----- 256 */
    uint64_t heartbeat_ns;            /* 256  CLOCK_MONOTONIC of the last beat */
    uint64_t heartbeats;              /* 264 */
    uint8_t  _pad1[48];
    /* -- sequence lock and wake-up words --------------------------------------- 320 */
    uint64_t generation;              /* 320  odd while the writer writes, even when stable */
    uint32_t update_seq;              /* 328  +1 after every publish (futex word) */
    uint32_t second_seq;              /* 332  +1 after every completed second (futex word) */
    uint8_t  _pad2[48];
    /* -- protected by the sequence lock ---------------------------------------- 384 */
    int64_t  T;                       /* 384  clock: largest bar second, -1 before any */
    uint64_t n_symbols;               /* 392  rows assigned (symbols valid below it) */
    uint64_t publishes;               /* 400 */
    uint64_t rows_published;          /* 408 */
    int64_t  publish_ns;              /* 416  CLOCK_REALTIME of the last publish */
    int64_t  publish_mono_ns;         /* 424  CLOCK_MONOTONIC of the last publish */
    uint64_t stats_len;               /* 432  bytes of JSON at off_stats */
    int64_t  stats_ns;                /* 440  CLOCK_REALTIME when that JSON was written */
    ff_second second;                 /* 448  72 bytes */
    uint8_t  _pad3[1024 - 448 - sizeof(ff_second)];
    int64_t  counters[FFSHM_MAX_COUNTERS];                /* 1024 */
    /* -- identity again: counter names, written before `magic` ------------------ */
    char     counter_names[FFSHM_MAX_COUNTERS][FFSHM_NAME_BYTES];  /* 1536 */
    uint8_t  _pad4[4096 - 1536 - FFSHM_MAX_COUNTERS * FFSHM_NAME_BYTES];
} ff_header;

typedef struct ff_reader_slot {
    int32_t  pid;                     /* 0: free (claimed by compare-and-swap) */
    uint32_t waiting;                 /* FFSHM_WAIT_* bits while the reader sleeps */
    int64_t  attached_ns;             /* CLOCK_REALTIME of the attach */
    uint64_t _pad[2];
} ff_reader_slot;

typedef struct ff_readers {
    int32_t  update_waiters;          /* readers asleep on update_seq (writer wakes if > 0) */
    int32_t  second_waiters;          /* readers asleep on second_seq */
    uint64_t attaches;                /* attaches since creation */
    uint8_t  _pad[48];
    ff_reader_slot slots[FFSHM_READER_SLOTS];
} ff_readers;

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define FFSHM_ASSERT(c, m) _Static_assert(c, #m)
#else
#define FFSHM_ASSERT(c, m) typedef char ffshm_assert_##m[(c) ? 1 : -1]
#endif
FFSHM_ASSERT(sizeof(ff_rec) == 64, rec_64);
FFSHM_ASSERT(sizeof(ff_second) == 72, second_72);
FFSHM_ASSERT(sizeof(ff_header) == 4096, header_4096);
FFSHM_ASSERT(sizeof(ff_readers) == 4096, readers_4096);
FFSHM_ASSERT(offsetof(ff_header, heartbeat_ns) == 256, hb_256);
FFSHM_ASSERT(offsetof(ff_header, generation) == 320, gen_320);
FFSHM_ASSERT(offsetof(ff_header, T) == 384, T_384);
FFSHM_ASSERT(offsetof(ff_header, second) == 448, second_448);
FFSHM_ASSERT(offsetof(ff_header, counters) == 1024, counters_1024);
FFSHM_ASSERT(offsetof(ff_header, counter_names) == 1536, names_1536);

#endif /* FFSHM_H */
