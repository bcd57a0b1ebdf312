/*
 * The zygote's anonymous memory in transparent huge pages, so that forking a cell copies one
 * page-table entry per 2 MiB instead of 512, and tearing a cell down drops as few.
 */
#ifndef PBX_ENGINE_HUGEPAGE_H
#define PBX_ENGINE_HUGEPAGE_H

#include <stddef.h>

struct pbx_hugepage_stats {
    size_t collapsed; /* 2 MiB ranges now mapped by one huge page */
    size_t refused;   /* ranges the kernel would not collapse */
};

/*
 * Give CPython's object allocator its arenas from one reserved region instead of a mapping
 * each, so that they form one mapping whose 2 MiB ranges can be collapsed.  Before
 * Py_PreInitialize; arenas the region cannot hold come from mmap as before.
 */
void pbx__hugepage_arenas_install(void);

/*
 * Open /proc/self/maps while /proc is still there (before the zygote's pivot_root); -1 when it
 * cannot be opened, which later only means nothing is collapsed.
 */
int pbx__hugepage_open_maps(void);

/*
 * Collapse every 2 MiB-aligned range of the process's private, writable, anonymous mappings
 * (the heap and the arenas' region included) into a huge page with MADV_COLLAPSE, reading the
 * mappings through maps_fd (closed here).  First the arenas' region gives back what the
 * zygote did not use, so that no cell's address space is larger than before.  Best effort: a kernel
 * without THP, a range the kernel refuses, a failed read leave the memory as it was.
 */
void pbx__hugepage_collapse(int maps_fd, struct pbx_hugepage_stats *stats);

#endif
