/*
 * tests/unit/test_domain_phone.c - phone number normalisation.
 *
 * The accepted written forms (international with '+' or "00", Swiss
 * national with a trunk '0'), the separators people type, and everything
 * that must be refused: other characters, misplaced '+', no prefix, and
 * digit counts outside E.164's 8 to 15.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "domain/command.h"
#include "domain/phone.h"

static const struct {
    const char *in;
    const char *out;
} good[] = {
    /* international with '+' */
    { "+41711234567", "+41711234567" },
    { "+41 71 123 45 67", "+41711234567" },
    { "+41-71-123-45-67", "+41711234567" },
    { "+41.71.123.45.67", "+41711234567" },
    { "+41 (71) 123/45 67", "+41711234567" },
    { "+1 (555) 123-4567", "+15551234567" },
    { "  +44 20 7946 0958  ", "+442079460958" },
    { "+ 41 71 123 45 67", "+41711234567" },
    { "(+41) 71 123 45 67", "+41711234567" },
    /* "00" international prefix */
    { "0041 71 123 45 67", "+41711234567" },
    { "+41 (0)71 123 45 67", "+41711234567" },
    { "0041 (0)71 123 45 67", "+41711234567" },
    { "+44 (0)20 7946 0958", "+442079460958" },
    { "0041711234567", "+41711234567" },
    { "001 555 123 4567", "+15551234567" },
    { "00711234567", "+711234567" },
    /* national Swiss form: +41, trunk 0 dropped */
    { "071 123 45 67", "+41711234567" },
    { "0711234567", "+41711234567" },
    { "079/999.99.99", "+41799999999" },
    /* E.164 length bounds: 8 and 15 digits */
    { "+12345678", "+12345678" },
    { "+123456789012345", "+123456789012345" },
    { "0123456", "+41123456" },               /* 41 + 6 = 8 digits */
    { "01234567890123", "+411234567890123" },  /* 41 + 13 = 15 digits */
    { "00123456789012345", "+123456789012345" },
};

static const char *const bad[] = {
    "",
    " ",
    "+",
    "00",
    "0",
    "abc",
    "call +41 71 123 45 67",
    "+41 71 123 45 67 ext 3",
    "+41 71 123 45 67#",
    "+41 71 123 45 67;",
    "41711234567",          /* no '+', no "00", no trunk '0' */
    "711234567",
    "+41 71 +123 45 67",    /* '+' inside */
    "++41711234567",
    "41+711234567",
    "+0711234567",          /* country codes start with 1-9 */
    "000711234567",         /* "00" then 0 */
    "0071123",              /* 00 + 5 digits: too short */
    "+1234567",             /* 7 digits */
    "+1234567890123456",    /* 16 digits */
    "012345",               /* 41 + 5 = 7 digits */
    "012345678901234",      /* 41 + 14 = 16 digits */
    "001234567890123456",   /* 00 + 16 digits */
    "+41 71 123 45 67\n",
    "+41\t711234567",
    "+41_711234567",
    "+41 71 123 45 6７",     /* fullwidth digit */
    "+41 71 123 45 67\xc2\xa0", /* no-break space */
    "+4171123456789012345678901234567890",
};

Test(phone, accepted_forms)
{
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char out[DOM_PHONE_MAX];
        memset(out, 'x', sizeof out);
        cr_expect(dom_phone_normalize(good[i].in, out, sizeof out), "refused \"%s\"", good[i].in);
        cr_expect_str_eq(out, good[i].out, "\"%s\"", good[i].in);
        /* Normalising is idempotent. */
        char again[DOM_PHONE_MAX];
        cr_expect(dom_phone_normalize(out, again, sizeof again));
        cr_expect_str_eq(again, out);
    }
}

Test(phone, refused_forms)
{
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char out[DOM_PHONE_MAX] = "junk";
        cr_expect(!dom_phone_normalize(bad[i], out, sizeof out), "accepted \"%s\" as \"%s\"",
                  bad[i], out);
        cr_expect_str_eq(out, "", "output not cleared for \"%s\"", bad[i]);
    }
}

Test(phone, output_buffer_and_null_arguments)
{
    char small[12];
    cr_assert(!dom_phone_normalize("+41711234567", small, sizeof small)); /* needs 13 */
    char exact[13];
    cr_assert(dom_phone_normalize("+41711234567", exact, sizeof exact));
    cr_assert_str_eq(exact, "+41711234567");
    cr_assert(!dom_phone_normalize(NULL, exact, sizeof exact));
    cr_assert(!dom_phone_normalize("+41711234567", NULL, 0));
    cr_assert(!dom_phone_normalize("+41711234567", exact, 0));
}

Test(phone, long_inputs_are_refused_without_overflow)
{
    char in[DOM_TEXT_MAX];
    memset(in, '1', sizeof in - 1);
    in[0] = '+';
    in[sizeof in - 1] = '\0';
    char out[DOM_PHONE_MAX];
    cr_assert(!dom_phone_normalize(in, out, sizeof out));
    /* Many separators around a valid number are fine. */
    memset(in, ' ', sizeof in - 1);
    memcpy(in + 100, "+41711234567", 12);
    cr_assert(dom_phone_normalize(in, out, sizeof out));
    cr_assert_str_eq(out, "+41711234567");
}
