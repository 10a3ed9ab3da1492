/*
 * domain/phone.h - phone number normalisation.
 *
 * ZITADEL normalises numbers to E.164 with libphonenumber and a default
 * region of CH. factord does not carry libphonenumber: it accepts numbers in
 * international form ("+41 71 123 45 67", "0041 71 ...", "+1 (555) 123-4567")
 * and national Swiss form ("071 123 45 67"), strips separators and checks
 * E.164's length (8 to 15 digits after the country code's '+'). The
 * difference is documented in docs/errors.md.
 *
 * Layer: domain; pure: includes only libc, jansson and libuuid, no I/O
 * (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_DOMAIN_PHONE_H
#define FACTORD_DOMAIN_PHONE_H

#include <stdbool.h>
#include <stddef.h>

/* Normalise in to "+<digits>" in out (at least DOM_PHONE_MAX bytes).
 * Returns false when in is not a usable number. */
bool dom_phone_normalize(const char *in, char *out, size_t out_len);

#endif
