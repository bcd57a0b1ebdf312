/*
 * Copy-on-write faults taken before the code arrives: the zygote learns, once, which of its
 * pages a run writes after a spare's dry run, and every spare's job copies those pages before
 * it reports ready.
 */
#ifndef PBX_ENGINE_PREFAULT_H
#define PBX_ENGINE_PREFAULT_H

#include <stddef.h>

struct pbx_zygote_state;

/*
 * How many pages are learned by default, and at most: each costs every idle spare 4 KiB of its
 * own (pybox serve --prefault-pages).
 */
#define PBX_PREFAULT_PAGES     256
#define PBX_PREFAULT_MAX_PAGES 4096

/*
 * Open the procfs the zygote sees before its pivot_root (O_PATH), so that the learning
 * child can read its own page map later; -1 when there is none, which only means nothing is
 * learned.
 */
int pbx__prefault_open_proc(void);

/*
 * In the zygote, once its memory is final (just before READY): fork a child that does what a
 * spare's job does before its code arrives (the after-fork hooks, the dry run), runs a few
 * fixed programs of pybox's own through the bootstrap's run() and reports every page of a
 * private writable mapping that it shared before they ran and owned after.  Those pages are
 * kept for pbx__prefault_apply(), at most max_pages of them, those of the first programs
 * first (0: nothing is learned).  proc_fd is closed here.  Best effort: any failure (no
 * procfs, a child that fails or takes over 10 s) leaves nothing learned.  Returns how many
 * pages were learned.
 */
size_t pbx__prefault_learn(const struct pbx_zygote_state *zs, int proc_fd, size_t max_pages);

/*
 * In a spare's job, after its dry run: copy every learned page (MADV_POPULATE_WRITE: as if
 * written, without writing), so that the run after the code arrives finds them its own.
 * Ranges the job has unmapped since are skipped by the kernel.
 */
void pbx__prefault_apply(void);

#endif
