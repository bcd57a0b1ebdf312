/*
 * Transparent huge pages for the zygote's anonymous memory.  A fork copies the page tables of
 * every private writable mapping, one entry (and one page reference) per 4 KiB page, and the
 * child's exit drops them all again: with the scientific modules preloaded, some 15,000
 * entries each way per cell, the largest part of what an execution costs the machine.  A
 * range mapped by one huge page costs a fork one entry.  The zygote collapses its anonymous
 * memory once, just before it reports READY; a cell that writes into such a range then splits
 * only its own mapping of it and copies the one 4 KiB page it writes, so its private memory is
 * what it was.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>

#include <Python.h>

#include "engine/hugepage.h"
#include "engine/maps.h"
#include "common/banned.h"

#ifndef MADV_COLLAPSE
#    define MADV_COLLAPSE 25
#endif

#define HUGE  ((uintptr_t)2 << 20)
#define PAGES (HUGE / 4096) /* x86-64: 2 MiB huge pages of 4 KiB pages */
/* Larger mappings are reservations, not memory (a sanitizer's shadow: terabytes). */
#define MAX_MAPPING ((uintptr_t)1 << 30)

/*
 * CPython's arenas (1 MiB on 64-bit Linux) are each a mapping of their own: some twenty of
 * them in a preloaded zygote, none 2 MiB-aligned, so none could be collapsed.  They come
 * instead, one slot each, from a region reserved here (never touched until used, so it costs
 * only address space) and trimmed to what the zygote used before it forks its first cell.  A
 * freed slot's memory goes back with MADV_DONTNEED, keeping the region one mapping.  CPython
 * calls these under its GIL, so nothing here needs a lock.
 */
#define SLOT   ((size_t)1 << 20)
#define REGION ((size_t)256 << 20)
#define SLOTS  (REGION / SLOT)

static struct {
    char *base;
    size_t slots; /* slots the region holds now (after the trim: fewer) */
    size_t next;  /* slots never used lie from here on */
    uint64_t used[SLOTS / 64];
} arenas;

static bool slot_used(size_t i)
{
    return (arenas.used[i / 64] >> (i % 64)) & 1;
}

static void slot_mark(size_t i, bool on)
{
    if (on)
        arenas.used[i / 64] |= (uint64_t)1 << (i % 64);
    else
        arenas.used[i / 64] &= ~((uint64_t)1 << (i % 64));
}

static void *arena_alloc(void *ctx, size_t size)
{
    void *p;

    (void)ctx;
    if (size <= SLOT && arenas.base != NULL) {
        for (size_t i = 0; i < arenas.next; i++) {
            if (!slot_used(i)) {
                slot_mark(i, true);
                return arenas.base + i * SLOT;
            }
        }
        if (arenas.next < arenas.slots) {
            slot_mark(arenas.next, true);
            return arenas.base + arenas.next++ * SLOT;
        }
    }
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void arena_free(void *ctx, void *ptr, size_t size)
{
    char *p = ptr;

    (void)ctx;
    if (arenas.base != NULL && p >= arenas.base && p < arenas.base + arenas.slots * SLOT) {
        size_t i = (size_t)(p - arenas.base) / SLOT;

        (void)madvise(arenas.base + i * SLOT, SLOT, MADV_DONTNEED);
        slot_mark(i, false);
        return;
    }
    munmap(ptr, size);
}

void pbx__hugepage_arenas_install(void)
{
    PyObjectArenaAllocator a = {.ctx = NULL, .alloc = arena_alloc, .free = arena_free};
    char *raw = mmap(NULL, REGION + HUGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    uintptr_t lo, hi;

    if (raw == MAP_FAILED)
        return;
    /* 2 MiB-aligned, the rest given back. */
    lo = ((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1);
    hi = lo + REGION;
    if (lo > (uintptr_t)raw)
        munmap(raw, lo - (uintptr_t)raw);
    if ((uintptr_t)raw + REGION + HUGE > hi)
        munmap((void *)hi, (uintptr_t)raw + REGION + HUGE - hi);
    arenas.base = (char *)lo;
    arenas.slots = SLOTS;
    PyObject_SetArenaAllocator(&a);
}

/* Give back the region's slots past the last 2 MiB the zygote used. */
static void arenas_trim(void)
{
    size_t keep;

    if (arenas.base == NULL)
        return;
    keep = (arenas.next * SLOT + HUGE - 1) & ~(HUGE - 1);
    if (keep < arenas.slots * SLOT)
        munmap(arenas.base + keep, arenas.slots * SLOT - keep);
    arenas.slots = keep / SLOT;
}

int pbx__hugepage_open_maps(void)
{
    return open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
}

/*
 * Whether a mapping is private, writable and anonymous: "rw-p" with no file and no name, or the
 * heap; and at most MAX_MAPPING (larger ones are reservations).
 */
static bool anon_private(const struct pbx_mapping *m)
{
    return strcmp(m->perms, "rw-p") == 0 && m->inode == 0 &&
           (m->name[0] == '\0' || strcmp(m->name, "[heap]") == 0) && m->hi - m->lo <= MAX_MAPPING;
}

/*
 * Whether at least half the 4 KiB pages of the 2 MiB range at p are resident: a huge page over a
 * sparse range would cost the zygote up to 2 MiB it never used.  vec has PAGES bytes.
 */
static bool mostly_resident(uintptr_t p, unsigned char *vec)
{
    size_t n = 0;

    if (mincore((void *)p, HUGE, vec) < 0)
        return false;
    for (size_t i = 0; i < PAGES; i++)
        n += vec[i] & 1;
    return n >= PAGES / 2;
}

void pbx__hugepage_collapse(int maps_fd, struct pbx_hugepage_stats *stats)
{
    unsigned char vec[PAGES];
    struct pbx_maps maps;
    struct pbx_mapping m;

    memset(stats, 0, sizeof(*stats));
    arenas_trim();
    if (pbx__maps_read(maps_fd, &maps) < 0) {
        if (maps_fd >= 0)
            close(maps_fd);
        return;
    }
    while (pbx__maps_next(&maps, &m)) {
        if (!anon_private(&m) || pbx__maps_owns(&maps, m.lo, m.hi))
            continue;
        for (uintptr_t p = (m.lo + HUGE - 1) & ~(HUGE - 1); p + HUGE <= m.hi; p += HUGE) {
            if (!mostly_resident(p, vec))
                continue;
            if (madvise((void *)p, HUGE, MADV_COLLAPSE) == 0)
                stats->collapsed++;
            else
                stats->refused++;
        }
    }
    pbx__maps_free(&maps);
    close(maps_fd);
}
