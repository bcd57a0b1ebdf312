/* Signal names and numbers, one table for the engine's results and the client's parsing. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/signame.h"
#include "common/banned.h"

#define NSIG_NAMED 32 /* the classic signals, 1..31 */

static char names[NSIG_NAMED][16];
static pthread_once_t names_once = PTHREAD_ONCE_INIT;

static void fill_names(void)
{
    for (int s = 1; s < NSIG_NAMED; s++) {
        const char *abbrev = sigabbrev_np(s);

        snprintf(names[s], sizeof(names[s]), "SIG%s", abbrev ? abbrev : "UNKNOWN");
    }
}

const char *pbx_signal_name(int sig)
{
    if (sig <= 0 || sig >= NSIG_NAMED)
        return "SIGUNKNOWN";
    pthread_once(&names_once, fill_names);
    return names[sig];
}

int pbx_signal_number(const char *name)
{
    if (name == NULL || strcmp(name, "SIGUNKNOWN") == 0)
        return 0;
    pthread_once(&names_once, fill_names);
    for (int s = 1; s < NSIG_NAMED; s++) {
        if (strcmp(names[s], name) == 0)
            return s;
    }
    return 0;
}
