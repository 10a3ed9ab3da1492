/*
 * domain/phone.c - phone numbers to E.164 ("+<digits>") without
 * libphonenumber.
 *
 * Three written forms are understood: international with '+' or with the
 * "00" international call prefix, and Swiss national form with a single
 * trunk '0' (ZITADEL's default region is CH). Separators people type
 * (spaces, '-', '.', '(', ')', '/') are dropped, and so is a bracketed trunk
 * zero after a country code ("+41 (0)71 ...");  anything else makes the
 * number unusable, as does a digit count outside E.164's 8 to 15.
 */
#include "domain/phone.h"

#include <string.h>

#define E164_MIN_DIGITS 8
#define E164_MAX_DIGITS 15
#define DEFAULT_COUNTRY_CODE "41" /* CH */

static bool is_separator(char c)
{
    return c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || c == '/';
}

bool dom_phone_normalize(const char *in, char *out, size_t out_len)
{
    /* Digits as typed, with a leading '+' remembered; at most
     * 2 (a "00" prefix) + 15 digits are worth reading. */
    char digits[E164_MAX_DIGITS + 4];
    size_t n = 0;
    bool plus = false, seen_digit = false;

    if (out && out_len > 0)
        out[0] = '\0';
    if (!in || !out)
        return false;
    for (const char *p = in; *p; p++) {
        char c = *p;
        /* "+41 (0)71 ...": the national trunk zero written in brackets after
         * the country code is not part of the number. */
        if (c == '(' && p[1] == '0' && p[2] == ')' && seen_digit &&
            (plus || (n >= 2 && digits[0] == '0' && digits[1] == '0'))) {
            p += 2;
            continue;
        }
        if (is_separator(c))
            continue;
        if (c == '+') {
            /* Only as the first significant character, and only once. */
            if (plus || seen_digit)
                return false;
            plus = true;
            continue;
        }
        if (c < '0' || c > '9')
            return false;
        seen_digit = true;
        if (n >= sizeof digits - 1)
            return false; /* longer than any E.164 number in any written form */
        digits[n++] = c;
    }
    digits[n] = '\0';

    /* The country code and national significant number, without prefixes. */
    char e164[E164_MAX_DIGITS + 4];
    const char *rest;
    const char *country = "";
    if (plus) {
        rest = digits;
    } else if (n >= 2 && digits[0] == '0' && digits[1] == '0') {
        rest = digits + 2;
    } else if (n >= 1 && digits[0] == '0') {
        country = DEFAULT_COUNTRY_CODE;
        rest = digits + 1;
        /* A national number cannot start with another trunk zero. */
        if (rest[0] == '0')
            return false;
    } else {
        return false; /* no '+', no "00", no trunk '0': no region to assume */
    }
    /* Country codes start with 1-9. */
    if (country[0] == '\0' && (rest[0] < '1' || rest[0] > '9'))
        return false;

    size_t total = strlen(country) + strlen(rest);
    if (total < E164_MIN_DIGITS || total > E164_MAX_DIGITS)
        return false;
    e164[0] = '+';
    memcpy(e164 + 1, country, strlen(country));
    memcpy(e164 + 1 + strlen(country), rest, strlen(rest) + 1);
    if (strlen(e164) + 1 > out_len)
        return false;
    memcpy(out, e164, strlen(e164) + 1);
    return true;
}
