/*
 * tests/unit/test_sms_logic.c - the SMS adapter's pure parts: which HTTP
 * statuses are sent, retried or permanent, Retry-After parsing and its cap,
 * the form encoding of Twilio's request, and the E.164 check.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "infra/sms/sms.h"

Test(sms_logic, http_status_classes)
{
    static const struct { long status; es_sms_status want; } cases[] = {
        {200, ES_SMS_SENT}, {201, ES_SMS_SENT}, {204, ES_SMS_SENT}, {299, ES_SMS_SENT},
        {408, ES_SMS_RETRY}, {429, ES_SMS_RETRY}, {500, ES_SMS_RETRY}, {502, ES_SMS_RETRY},
        {503, ES_SMS_RETRY}, {599, ES_SMS_RETRY},
        {100, ES_SMS_PERMANENT}, {301, ES_SMS_PERMANENT}, {400, ES_SMS_PERMANENT}, {401, ES_SMS_PERMANENT},
        {403, ES_SMS_PERMANENT}, {404, ES_SMS_PERMANENT}, {409, ES_SMS_PERMANENT}, {422, ES_SMS_PERMANENT},
        {0, ES_SMS_PERMANENT}, {600, ES_SMS_PERMANENT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_expect_eq(es_sms_classify_http(cases[i].status), cases[i].want, "HTTP %ld", cases[i].status);
}

Test(sms_logic, retry_after_seconds_dates_and_cap)
{
    cr_expect_eq(es_sms_parse_retry_after("7", 0), 7);
    cr_expect_eq(es_sms_parse_retry_after(" 120\r\n", 0), 120);
    cr_expect_eq(es_sms_parse_retry_after("0", 0), 0);
    cr_expect_eq(es_sms_parse_retry_after("86400", 0), ES_SMS_RETRY_AFTER_MAX_S);
    cr_expect_eq(es_sms_parse_retry_after("-3", 0), -1);
    cr_expect_eq(es_sms_parse_retry_after("soon", 0), -1);
    cr_expect_eq(es_sms_parse_retry_after("12s", 0), -1);
    cr_expect_eq(es_sms_parse_retry_after("", 0), -1);
    cr_expect_eq(es_sms_parse_retry_after(NULL, 0), -1);
    /* 2015-10-21T07:28:00Z is 1445412480 */
    cr_expect_eq(es_sms_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 - 30), 30);
    cr_expect_eq(es_sms_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 + 30), 0);
    cr_expect_eq(es_sms_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 0), ES_SMS_RETRY_AFTER_MAX_S);
    cr_expect_eq(es_sms_parse_retry_after("Wed, 21 Oct 2015 07:28:00", 0), -1);
}

Test(sms_logic, form_encoding)
{
    char *b = NULL;
    size_t len = 0;
    es_sms_form_add(&b, &len, "To", "+41791234567");
    es_sms_form_add(&b, &len, "From", "+15005550006");
    es_sms_form_add(&b, &len, "Body", "Code 123456 & more=yes/ok ~_.-\xc3\xa4");
    cr_assert_str_eq(b, "To=%2B41791234567&From=%2B15005550006&Body=Code+123456+%26+more%3Dyes%2Fok+~_.-%C3%A4");
    cr_assert_eq(len, strlen(b));
    free(b);
    b = NULL;
    len = 0;
    es_sms_form_add(&b, &len, "Empty", "");
    cr_assert_str_eq(b, "Empty=");
    free(b);
}

Test(sms_logic, e164)
{
    cr_expect(es_sms_is_e164("+41791234567"));
    cr_expect(es_sms_is_e164("+12"));
    cr_expect(es_sms_is_e164("+123456789012345"));
    cr_expect_not(es_sms_is_e164("+1234567890123456"));
    cr_expect_not(es_sms_is_e164("+1"));
    cr_expect_not(es_sms_is_e164("41791234567"));
    cr_expect_not(es_sms_is_e164("+041791234567"));
    cr_expect_not(es_sms_is_e164("+41 79 123 45 67"));
    cr_expect_not(es_sms_is_e164(""));
    cr_expect_not(es_sms_is_e164(NULL));
}

Test(sms_logic, names)
{
    cr_expect_str_eq(es_sms_kind_name(ES_SMS_TWILIO), "twilio");
    cr_expect_str_eq(es_sms_kind_name(ES_SMS_WEBHOOK), "webhook");
    cr_expect_str_eq(es_sms_kind_name(ES_SMS_NONE), "none");
    cr_expect_str_eq(es_sms_status_name(ES_SMS_RETRY), "retry");
}
