/* placeholder: being written */
#include <stdio.h>
#include "cmd/factord/cmd.h"
int fd_submit_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "factord submit: not built yet\n");
    return 2;
}
