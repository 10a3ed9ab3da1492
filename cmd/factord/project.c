/* placeholder: being written */
#include <stdio.h>
#include "cmd/factord/cmd.h"
int fd_project_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "factord project: not built yet\n");
    return 2;
}
int fd_project_loop(const es_config *cfg)
{
    (void)cfg;
    return 2;
}
