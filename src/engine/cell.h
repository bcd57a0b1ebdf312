/* A cell: one execution, forked from the zygote. */
#ifndef PBX_ENGINE_CELL_H
#define PBX_ENGINE_CELL_H

#include "engine/proto.h"
#include "engine/zygote.h"

/*
 * Run one execution in the calling process, a fresh fork of the zygote:
 * `job` and its fds (indexed by enum pbx_proto_fd, owned) come from the
 * supervisor.  Reports on fds[PBX_FD_STATUS] and never returns.
 */
_Noreturn void pbx__cell_main(const struct pbx_zygote_state *zs, const struct pbx_proto_job *job,
                              int *fds, int nfds);

/*
 * A spare cell: set up ahead of demand with the limits of `spare`, its job
 * forked, isolated and waiting.  fds[0] is the status socket, the rest
 * cgroup.procs fds.  Reports READY, then waits on the status socket for one
 * PBX_JOB_GO message and runs it as pbx__cell_main() would.  Never returns.
 */
_Noreturn void pbx__cell_spare_main(const struct pbx_zygote_state *zs,
                                    const struct pbx_proto_job *spare, int *fds, int nfds);

#endif
