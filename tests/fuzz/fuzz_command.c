/*
 * tests/fuzz/fuzz_command.c - libFuzzer target for the command decoder
 * (brief §2: bad input on the commands topic never stops the processor).
 *
 * Any bytes go through dom_cmd_decode. A record that decodes must survive
 * the canonical round trip: its wire JSON decodes again to the same
 * command, and the canonical text (what the idempotency hash covers) is a
 * fixed point. A record that fails must leave only the id and replyTo,
 * each either empty or usable (a UUID, a topic name), and a reason that is
 * valid UTF-8 (it travels in JSON).
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "domain/command.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dom_cmd *cmd = malloc(sizeof *cmd), *again = malloc(sizeof *again);
    check(cmd && again);
    es_error err = {0};
    if (dom_cmd_decode((const char *)data, size, cmd, &err) != ES_OK) {
        check(err.text[0] != '\0');
        /* The reason goes into JSON (the dead letter's factord-reason
         * header, the Dec01 reply): it must be valid UTF-8. */
        json_t *reason = json_string(err.text);
        check(reason != NULL);
        json_decref(reason);
        check(cmd->type == DOM_CMD_UNKNOWN && cmd->instance_id[0] == '\0');
        check(cmd->id[0] == '\0' || strlen(cmd->id) == DOM_UUID_LEN);
        goto out;
    }
    check(cmd->type > DOM_CMD_UNKNOWN && cmd->type < DOM_CMD__COUNT);
    check(strlen(cmd->id) == DOM_UUID_LEN && cmd->instance_id[0] != '\0');

    /* decode(encode(cmd)) == cmd, with and without replyTo */
    json_t *j = dom_cmd_to_json(cmd, true);
    char *wire = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    check(wire != NULL);
    es_error err2 = {0};
    check(dom_cmd_decode(wire, strlen(wire), again, &err2) == ES_OK);
    check(memcmp(cmd, again, sizeof *cmd) == 0);
    free(wire);

    /* the canonical text is a fixed point and has no replyTo */
    char *canon = dom_cmd_canonical(cmd);
    check(dom_cmd_decode(canon, strlen(canon), again, &err2) == ES_OK);
    char *canon2 = dom_cmd_canonical(again);
    check(strcmp(canon, canon2) == 0);
    check(again->reply_to[0] == '\0');
    free(canon);
    free(canon2);
out:
    free(cmd);
    free(again);
    return 0;
}
