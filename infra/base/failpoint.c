/*
 * infra/base/failpoint.c - see failpoint.h.
 */
#include "infra/base/failpoint.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infra/base/log.h"

void es_failpoint(const char *name)
{
    static int loaded;
    static char want[64];
    static long remaining;
    if (!loaded) {
        loaded = 1;
        const char *v = getenv("FACTORD_FAILPOINT");
        if (v && *v) {
            snprintf(want, sizeof want, "%s", v);
            char *colon = strchr(want, ':');
            remaining = 1;
            if (colon) {
                *colon = '\0';
                remaining = strtol(colon + 1, NULL, 10);
                if (remaining < 1)
                    remaining = 1;
            }
        }
    }
    if (!want[0] || strcmp(want, name) != 0)
        return;
    if (--remaining > 0)
        return;
    es_warn("failpoint reached: killing this process", "failpoint", name);
    kill(getpid(), SIGKILL);
}
