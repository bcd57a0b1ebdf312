/*
 * Fuzz target: the /proc/self/cgroup parser (and the "key N" parser of
 * memory.events and memory.oom_control).  With PYBOX_FUZZ it is a libFuzzer
 * binary; otherwise fuzz/replay.c runs it over fuzz/corpus/proc_cgroup/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"
#include "common/error.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const controllers[] = {"memory",  "pids",         "cpu",
                                              "cpuacct", "name=systemd", NULL};
    const char *text = (const char *)data;
    uint64_t value;

    for (size_t i = 0; i < sizeof(controllers) / sizeof(controllers[0]); i++) {
        char *path = NULL;

        if (pbx__cgroup_parse_proc(text, size, controllers[i], &path) == 0) {
            /* The contract: an absolute path with no ".." component and no NUL. */
            PBX_ASSERT(path != NULL && path[0] == '/');
            PBX_ASSERT(strstr(path, "/../") == NULL);
            PBX_ASSERT(strlen(path) < 3 || strcmp(path + strlen(path) - 3, "/..") != 0);
            PBX_ASSERT(strlen(path) <= size);
            free(path);
        } else {
            PBX_ASSERT(path == NULL);
        }
    }
    (void)pbx__cgroup_parse_key(text, size, "oom_kill", &value);
    return 0;
}
