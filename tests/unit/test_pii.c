/*
 * tests/unit/test_pii.c - personal data sealed under per-user keys
 * (docs/pii.md): the sealed record (domain/event.c), sealing, opening and
 * key wrapping (infra/crypto/pii.c), and what the payload codec and the
 * chain's canonical bytes make of a sealed event.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "domain/event.h"
#include "infra/crypto/chain.h"
#include "infra/crypto/pii.h"

static es_pii_key key_of(unsigned char fill)
{
    es_pii_key k;
    memset(k.key, fill, sizeof k.key);
    return k;
}

static es_pii_master master_of(unsigned char fill)
{
    unsigned char k[ES_PII_KEY_LEN];
    memset(k, fill, sizeof k);
    es_pii_master m;
    es_pii_master_init(&m, k);
    return m;
}

static dom_evt event_of(dom_evt_type type)
{
    dom_evt e;
    memset(&e, 0, sizeof e);
    e.type = type;
    strcpy(e.instance_id, "inst-1");
    strcpy(e.aggregate_id, "user-1");
    strcpy(e.resource_owner, "org-1");
    strcpy(e.creator, "admin");
    strcpy(e.command_id, "5d1c0000-0000-4000-8000-000000000001");
    e.sequence = 7;
    e.position = 1042;
    e.created_at_us = INT64_C(1764090000000000);
    e.revision = DOM_EVT_REVISION;
    dom_import *h = &e.human;
    switch (type) {
    case DOM_EVT_HUMAN_ADDED:
        strcpy(h->user_name, "zoe.quote@example.com");
        strcpy(h->first_name, "Zo\xc3\xab");
        strcpy(h->last_name, "Quote \"Q\"");
        strcpy(h->nick_name, "zee-nick");
        strcpy(h->display_name, "Zo\xc3\xab Quote");
        strcpy(h->preferred_language, "de");
        strcpy(h->gender, "GENDER_FEMALE");
        strcpy(h->email, "zoe@example.com");
        h->is_email_verified = true;
        strcpy(h->phone, "+41791234567");
        break;
    case DOM_EVT_PHONE_CHANGED:
        strcpy(e.phone, "+41797654321");
        break;
    case DOM_EVT_REMOVED:
        strcpy(e.user_name, "zoe.quote@example.com");
        break;
    case DOM_EVT_PHONE_CODE_SEND_FAILED:
    case DOM_EVT_OTP_SMS_CODE_SEND_FAILED:
    case DOM_EVT_PHONE_CODE_SENT:
    case DOM_EVT_OTP_SMS_CODE_SENT:
        e.delivery.code_sequence = 3;
        e.delivery.kind = type == DOM_EVT_PHONE_CODE_SENT || type == DOM_EVT_PHONE_CODE_SEND_FAILED
                              ? DOM_CODE_PHONE
                              : DOM_CODE_OTP_SMS;
        e.delivery.sent = type == DOM_EVT_PHONE_CODE_SENT || type == DOM_EVT_OTP_SMS_CODE_SENT;
        strcpy(e.delivery.provider, "twilio");
        strcpy(e.delivery.message_id, "SM123");
        strcpy(e.delivery.reason, "twilio error 21211: The 'To' number +41791234567 is not valid");
        break;
    default:
        break;
    }
    return e;
}

/* The PII-bearing types, and the plaintexts each carries. */
static const dom_evt_type pii_types[] = {DOM_EVT_HUMAN_ADDED, DOM_EVT_PHONE_CHANGED, DOM_EVT_REMOVED,
                                         DOM_EVT_PHONE_CODE_SENT, DOM_EVT_PHONE_CODE_SEND_FAILED,
                                         DOM_EVT_OTP_SMS_CODE_SENT, DOM_EVT_OTP_SMS_CODE_SEND_FAILED};
#define N_PII_TYPES (sizeof pii_types / sizeof pii_types[0])
static const char *const secrets[] = {"zoe.quote@example.com", "zoe@example.com", "+41791234567",
                                      "+41797654321", "Quote \\\"Q", "Zo\xc3\xab", "zee-nick", "GENDER_FEMALE", "is not valid"};

static char *payload_text(const dom_evt *e)
{
    json_t *p = dom_evt_payload_to_json(e);
    char *t = json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(p);
    return t;
}

/* Only these types hold PII fields. */
Test(pii_record, types_with_personal_fields)
{
    for (int t = DOM_EVT_UNKNOWN + 1; t < DOM_EVT__COUNT; t++) {
        bool want = false;
        for (size_t i = 0; i < N_PII_TYPES; i++)
            want |= pii_types[i] == (dom_evt_type)t;
        cr_assert_eq(dom_evt_type_has_pii((dom_evt_type)t), want, "%s", dom_evt_type_name((dom_evt_type)t));
    }
    dom_evt e = event_of(DOM_EVT_LOCKED);
    unsigned char buf[DOM_PII_RECORD_MAX];
    size_t len;
    es_error err = {0};
    cr_assert_eq(dom_evt_pii_pack(&e, buf, sizeof buf, &len, &err), ES_EINVAL);
}

/* pack then unpack gives back every field; the record is padded. */
Test(pii_record, round_trip_of_every_type)
{
    for (size_t i = 0; i < N_PII_TYPES; i++) {
        dom_evt e = event_of(pii_types[i]), back = event_of(pii_types[i]);
        unsigned char buf[DOM_PII_RECORD_MAX];
        size_t len = 0;
        es_error err = {0};
        cr_assert_eq(dom_evt_pii_pack(&e, buf, sizeof buf, &len, &err), ES_OK, "%s", err.text);
        cr_assert_eq(len % DOM_PII_PAD, 0);
        dom_evt_pii_clear(&back);
        cr_assert(memcmp(&back, &e, sizeof e) != 0, "clear empties the fields");
        cr_assert_eq(dom_evt_pii_unpack(&back, buf, len, &err), ES_OK, "%s", err.text);
        cr_assert(memcmp(&back, &e, sizeof e) == 0, "%s", dom_evt_type_name(pii_types[i]));
    }
    /* empty fields are left out: a human with only an e-mail address */
    dom_evt e = event_of(DOM_EVT_HUMAN_ADDED);
    dom_evt_pii_clear(&e);
    strcpy(e.human.email, "a@b.c");
    unsigned char buf[DOM_PII_RECORD_MAX];
    size_t len = 0;
    cr_assert_eq(dom_evt_pii_pack(&e, buf, sizeof buf, &len, NULL), ES_OK);
    cr_assert_eq(len, DOM_PII_PAD);
    cr_assert_eq(buf[0], DOM_PII_F_EMAIL);
    cr_assert_eq(buf[1], 5);
    cr_assert_eq(buf[7], DOM_PII_F_END);
}

/* The largest record: every field of a human at 255 bytes (its phone at
 * the phone limit) packs into DOM_PII_RECORD_MAX and seals into dom_evt.pii. */
Test(pii_record, largest_record_fits)
{
    dom_evt e = event_of(DOM_EVT_HUMAN_ADDED);
    dom_import *h = &e.human;
    char *fields[] = {h->user_name, h->first_name, h->last_name, h->nick_name, h->display_name, h->email};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        memset(fields[i], 'a' + (int)i, DOM_TEXT_MAX - 1);
        fields[i][DOM_TEXT_MAX - 1] = '\0';
    }
    memset(h->gender, 'g', sizeof h->gender - 1);
    memset(h->phone, '9', DOM_PHONE_MAX - 1);
    unsigned char buf[DOM_PII_RECORD_MAX];
    size_t len = 0;
    es_error err = {0};
    cr_assert_eq(dom_evt_pii_pack(&e, buf, sizeof buf, &len, &err), ES_OK, "%s", err.text);
    cr_assert_leq(len, DOM_PII_RECORD_MAX);
    es_pii_key k = key_of(1);
    dom_evt copy = e;
    cr_assert_eq(es_pii_seal(&k, &e, &err), ES_OK, "%s", err.text);
    cr_assert_lt(strlen(e.pii), sizeof e.pii);
    cr_assert_eq(es_pii_open(&k, &e, &err), ES_OK, "%s", err.text);
    cr_assert_str_eq(e.human.email, copy.human.email);
    cr_assert_str_eq(e.human.phone, copy.human.phone);
    /* a phone longer than the phone limit does not pack */
    memset(h->phone, '9', DOM_PHONE_MAX);
    h->phone[DOM_PHONE_MAX] = '\0';
    cr_assert_eq(dom_evt_pii_pack(&copy, buf, sizeof buf, &len, &err), ES_OK);
    cr_assert_eq(dom_evt_pii_pack(&e, buf, sizeof buf, &len, &err), ES_EINVAL);
}

/* Records that pack could not have made are refused, the fields emptied. */
Test(pii_record, malformed_records_refused)
{
    struct {
        const char *what;
        unsigned char rec[64];
        size_t len;
        dom_evt_type type;
    } cases[] = {
        {"empty", {0}, 0, DOM_EVT_HUMAN_ADDED},
        {"not a multiple of the padding", {0}, 31, DOM_EVT_HUMAN_ADDED},
        {"over-padded", {0}, 64, DOM_EVT_HUMAN_ADDED},
        {"no end", {7, 30, 'a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a'}, 32, DOM_EVT_HUMAN_ADDED},
        {"unknown id", {10, 1, 'x', 0}, 32, DOM_EVT_HUMAN_ADDED},
        {"id of another type", {7, 1, 'x', 0}, 32, DOM_EVT_PHONE_CHANGED},
        {"out of order", {7, 1, 'x', 2, 1, 'y', 0}, 32, DOM_EVT_HUMAN_ADDED},
        {"repeated", {7, 1, 'x', 7, 1, 'y', 0}, 32, DOM_EVT_HUMAN_ADDED},
        {"zero length", {7, 0, 0}, 32, DOM_EVT_HUMAN_ADDED},
        {"length past the end", {7, 40, 'x', 0}, 32, DOM_EVT_HUMAN_ADDED},
        {"NUL inside", {7, 3, 'x', 0, 'y', 0}, 32, DOM_EVT_HUMAN_ADDED},
        {"not UTF-8", {7, 2, 0xc3, 0x28, 0}, 32, DOM_EVT_HUMAN_ADDED},
        {"overlong UTF-8", {7, 2, 0xc0, 0xaf, 0}, 32, DOM_EVT_HUMAN_ADDED},
        {"surrogate", {7, 3, 0xed, 0xa0, 0x80, 0}, 32, DOM_EVT_HUMAN_ADDED},
        {"padding not zeros", {7, 1, 'x', 0, 0, 1}, 32, DOM_EVT_HUMAN_ADDED},
        {"gender too long", {6, 32, 'g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g','g', 0}, 64, DOM_EVT_HUMAN_ADDED},
        {"phone too long", {8, 32, '1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1','1', 0}, 64, DOM_EVT_PHONE_CHANGED},
        {"no such fields", {0}, 32, DOM_EVT_LOCKED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dom_evt e = event_of(cases[i].type);
        es_error err = {0};
        cr_assert_eq(dom_evt_pii_unpack(&e, cases[i].rec, cases[i].len, &err), ES_EINVAL, "%s", cases[i].what);
        cr_assert_neq(err.text[0], '\0', "%s: says why", cases[i].what);
        cr_assert_str_eq(e.human.email, "", "%s", cases[i].what);
        cr_assert_str_eq(e.phone, "", "%s", cases[i].what);
    }
    /* the same shapes, well made, are taken */
    dom_evt e = event_of(DOM_EVT_HUMAN_ADDED);
    unsigned char ok[32] = {2, 2, 0xc3, 0xab, 7, 1, 'x', 0};
    cr_assert_eq(dom_evt_pii_unpack(&e, ok, sizeof ok, NULL), ES_OK);
    cr_assert_str_eq(e.human.first_name, "\xc3\xab");
    cr_assert_str_eq(e.human.email, "x");
    cr_assert_str_eq(e.human.user_name, "");
}

/* Sealing: the payload carries only the sealed member in place of the PII
 * fields, no plaintext; a fresh nonce each time; opening gives them back. */
Test(pii_seal, round_trip_and_fresh_nonce)
{
    es_pii_key k = key_of(7);
    for (size_t i = 0; i < N_PII_TYPES; i++) {
        dom_evt orig = event_of(pii_types[i]), a = orig, b = orig;
        es_error err = {0};
        cr_assert_eq(es_pii_seal(&k, &a, &err), ES_OK, "%s", err.text);
        cr_assert_eq(es_pii_seal(&k, &b, &err), ES_OK, "%s", err.text);
        cr_assert_eq(a.pii_state, DOM_PII_OPEN);
        cr_assert_eq(strncmp(a.pii, DOM_PII_PREFIX, strlen(DOM_PII_PREFIX)), 0, "%s", a.pii);
        cr_assert_str_neq(a.pii, b.pii, "each seal takes a new nonce");
        cr_assert_str_eq(a.human.email, orig.human.email, "the writer keeps the plaintext");
        char *text = payload_text(&a);
        for (size_t s = 0; s < sizeof secrets / sizeof secrets[0]; s++)
            cr_assert_null(strstr(text, secrets[s]), "%s in %s", secrets[s], text);
        cr_assert_not_null(strstr(text, "\"pii\":\"pii:v1:"), "%s", text);
        /* decoded as a reader gets it: sealed, fields empty; opened: as written */
        json_t *p = dom_evt_payload_to_json(&a);
        dom_evt r = orig;
        cr_assert_eq(dom_evt_payload_from_json(&r, p, &err), ES_OK, "%s", err.text);
        json_decref(p);
        cr_assert_eq(r.pii_state, DOM_PII_SEALED);
        cr_assert_str_eq(r.pii, a.pii);
        cr_assert_str_eq(r.human.email, "");
        cr_assert_str_eq(r.phone, "");
        cr_assert_str_eq(r.delivery.reason, "");
        cr_assert_eq(es_pii_open(&k, &r, &err), ES_OK, "%s", err.text);
        size_t diff = 0;
        while (diff < sizeof r && ((unsigned char *)&r)[diff] == ((unsigned char *)&a)[diff])
            diff++;
        cr_assert_eq(diff, sizeof r, "%s opens to what was sealed (byte %zu differs)", dom_evt_type_name(pii_types[i]), diff);
        /* opening or erasing never changes the bytes */
        char *again = payload_text(&r);
        cr_assert_str_eq(again, text);
        es_pii_mark_erased(&r);
        cr_assert_eq(r.pii_state, DOM_PII_ERASED);
        cr_assert_str_eq(r.human.user_name, "");
        cr_assert_str_eq(r.user_name, "");
        free(again);
        again = payload_text(&r);
        cr_assert_str_eq(again, text);
        free(again);
        free(text);
    }
    /* a plain event is left as it is */
    dom_evt plain = event_of(DOM_EVT_PHONE_CHANGED), copy = plain;
    cr_assert_eq(es_pii_open(&k, &plain, NULL), ES_OK);
    es_pii_mark_erased(&plain);
    cr_assert(memcmp(&plain, &copy, sizeof plain) == 0);
}

/* Wrong key, altered value, and every element of the associated data
 * changed: refused, the fields left empty. */
Test(pii_seal, refuses_wrong_key_tampering_and_moves)
{
    es_pii_key k = key_of(7), other = key_of(8);
    dom_evt sealed = event_of(DOM_EVT_HUMAN_ADDED);
    es_error err = {0};
    cr_assert_eq(es_pii_seal(&k, &sealed, &err), ES_OK);
    dom_evt_pii_clear(&sealed);
    sealed.pii_state = DOM_PII_SEALED;

    dom_evt e = sealed;
    cr_assert_eq(es_pii_open(&other, &e, &err), ES_EINVAL);
    cr_assert(strstr(err.text, "authenticate"), "%s", err.text);
    cr_assert_str_eq(e.human.email, "");
    cr_assert_eq(e.pii_state, DOM_PII_SEALED);

    /* every character of the base64 body flipped in turn */
    size_t start = strlen(DOM_PII_PREFIX), n = strlen(sealed.pii);
    for (size_t at = start; at < n; at += 7) {
        e = sealed;
        e.pii[at] = e.pii[at] == 'A' ? 'B' : 'A';
        cr_assert_eq(es_pii_open(&k, &e, &err), ES_EINVAL, "flipped at %zu", at);
        cr_assert_str_eq(e.human.email, "");
    }
    /* truncated, another prefix, not base64 */
    e = sealed;
    e.pii[n - 4] = '\0';
    cr_assert_eq(es_pii_open(&k, &e, &err), ES_EINVAL);
    e = sealed;
    memcpy(e.pii, "pii:v2:", 7);
    cr_assert_eq(es_pii_open(&k, &e, &err), ES_EINVAL);
    cr_assert(strstr(err.text, "prefix"), "%s", err.text);
    e = sealed;
    e.pii[start] = '*';
    cr_assert_eq(es_pii_open(&k, &e, &err), ES_EINVAL);

    /* moved: to another instance, user, type or sequence */
    e = sealed;
    strcpy(e.instance_id, "inst-2");
    cr_assert_eq(es_pii_open(&k, &e, &err), ES_EINVAL, "another instance");
    e = sealed;
    strcpy(e.aggregate_id, "user-2");
    cr_assert_eq(es_pii_open(&k, &e, &err), ES_EINVAL, "another user");
    e = sealed;
    e.sequence = 8;
    cr_assert_eq(es_pii_open(&k, &e, &err), ES_EINVAL, "another sequence");
    /* the ids are length-prefixed: moving a byte between them is a change */
    e = sealed;
    strcpy(e.instance_id, "inst-1u");
    strcpy(e.aggregate_id, "ser-1");
    cr_assert_eq(es_pii_open(&k, &e, &err), ES_EINVAL, "ids re-split");
    /* another type with PII fields: the same sealed member on a removal */
    dom_evt phone = event_of(DOM_EVT_PHONE_CHANGED);
    cr_assert_eq(es_pii_seal(&k, &phone, &err), ES_OK);
    dom_evt removed = event_of(DOM_EVT_REMOVED);
    removed.sequence = phone.sequence;
    strcpy(removed.pii, phone.pii);
    cr_assert_eq(es_pii_open(&k, &removed, &err), ES_EINVAL, "another type");
    /* the untouched value still opens */
    e = sealed;
    cr_assert_eq(es_pii_open(&k, &e, &err), ES_OK, "%s", err.text);
    cr_assert_str_eq(e.human.email, "zoe@example.com");
}

/* The payload decoder refuses a sealed member beside a plain PII field,
 * and the chain's canonical bytes of a sealed event are jansson's. */
Test(pii_seal, codec_and_canonical_bytes)
{
    es_pii_key k = key_of(3);
    es_error err = {0};
    for (size_t i = 0; i < N_PII_TYPES; i++) {
        dom_evt e = event_of(pii_types[i]);
        cr_assert_eq(es_pii_seal(&k, &e, &err), ES_OK);
        json_t *j = dom_evt_to_json(&e);
        char *want = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        char *got = es_chain_canonical(&e);
        cr_assert_str_eq(got, want);
        /* the whole event back through the decoder (the fast path too) */
        char *text = json_dumps(j, JSON_COMPACT);
        dom_evt back;
        cr_assert_eq(dom_evt_decode(text, strlen(text), &back, &err), ES_OK, "%s", err.text);
        cr_assert(dom_evt_decode_plain(text, strlen(text), &back), "the fast path takes a sealed event");
        char *again = es_chain_canonical(&back);
        cr_assert_str_eq(again, want, "a decoded sealed event re-encodes to its bytes");
        free(again);
        free(text);
        /* a plain PII member beside the sealed one */
        json_t *p = json_object_get(j, "payload");
        const char *member = pii_types[i] == DOM_EVT_HUMAN_ADDED ? "email"
                             : pii_types[i] == DOM_EVT_PHONE_CHANGED ? "phone"
                             : pii_types[i] == DOM_EVT_REMOVED ? "userName" : "reason";
        json_object_set_new(p, member, json_string("x"));
        cr_assert_eq(dom_evt_from_json(j, &back, &err), ES_EINVAL, "%s", member);
        cr_assert(strstr(err.text, member), "%s", err.text);
        json_object_set_new(p, member, json_string("x"));
        json_object_del(p, member);
        json_object_set_new(p, "pii", json_string(""));
        cr_assert_eq(dom_evt_from_json(j, &back, &err), ES_EINVAL, "an empty sealed member");
        json_decref(j);
        free(got);
        free(want);
    }
    /* a "pii" member on a type without PII fields is an unknown member: ignored */
    dom_evt e = event_of(DOM_EVT_LOCKED);
    json_t *j = dom_evt_to_json(&e);
    json_object_set_new(json_object_get(j, "payload"), "pii", json_string("pii:v1:xx"));
    dom_evt back;
    cr_assert_eq(dom_evt_from_json(j, &back, &err), ES_OK);
    cr_assert_str_eq(back.pii, "");
    json_decref(j);
}

/* Key wrapping: a row's key unwraps only for its own user and instance
 * under the master key that wrapped it. */
Test(pii_keys, wrap_and_unwrap)
{
    es_pii_master m = master_of(9), other = master_of(10);
    cr_assert_eq(strlen(m.key_id), 8);
    cr_assert_str_neq(m.key_id, other.key_id);
    es_pii_key dek, dek2, back;
    unsigned char w[ES_PII_WRAPPED_LEN], w2[ES_PII_WRAPPED_LEN];
    es_error err = {0};
    cr_assert_eq(es_pii_key_new(&m, "inst-1", "user-1", &dek, w, &err), ES_OK, "%s", err.text);
    cr_assert_eq(es_pii_key_new(&m, "inst-1", "user-1", &dek2, w2, &err), ES_OK);
    cr_assert(memcmp(dek.key, dek2.key, sizeof dek.key) != 0, "fresh keys");
    cr_assert(memcmp(w, w2, sizeof w) != 0);
    cr_assert_eq(es_pii_key_unwrap(&m, "inst-1", "user-1", w, sizeof w, &back, &err), ES_OK, "%s", err.text);
    cr_assert(memcmp(back.key, dek.key, sizeof dek.key) == 0);

    cr_assert_eq(es_pii_key_unwrap(&other, "inst-1", "user-1", w, sizeof w, &back, &err), ES_EINVAL);
    cr_assert(strstr(err.text, m.key_id) == NULL && strstr(err.text, other.key_id), "%s", err.text);
    cr_assert_eq(back.key[0] | back.key[31], 0, "zeroed on failure");
    cr_assert_eq(es_pii_key_unwrap(&m, "inst-1", "user-2", w, sizeof w, &back, &err), ES_EINVAL);
    cr_assert_eq(es_pii_key_unwrap(&m, "inst-2", "user-1", w, sizeof w, &back, &err), ES_EINVAL);
    cr_assert_eq(es_pii_key_unwrap(&m, "inst-1", "user-1", w, sizeof w - 1, &back, &err), ES_EINVAL);
    for (size_t at = 0; at < sizeof w; at += 5) {
        unsigned char t[ES_PII_WRAPPED_LEN];
        memcpy(t, w, sizeof t);
        t[at] ^= 0x01;
        cr_assert_eq(es_pii_key_unwrap(&m, "inst-1", "user-1", t, sizeof t, &back, &err), ES_EINVAL,
                     "flipped at %zu", at);
    }
    /* the unwrapped key opens what the fresh one sealed */
    dom_evt e = event_of(DOM_EVT_PHONE_CHANGED);
    cr_assert_eq(es_pii_seal(&dek, &e, &err), ES_OK);
    dom_evt_pii_clear(&e);
    cr_assert_eq(es_pii_key_unwrap(&m, "inst-1", "user-1", w, sizeof w, &back, &err), ES_OK);
    cr_assert_eq(es_pii_open(&back, &e, &err), ES_OK, "%s", err.text);
    cr_assert_str_eq(e.phone, "+41797654321");
    es_pii_key_wipe(&dek);
    cr_assert_eq(dek.key[0] | dek.key[15] | dek.key[31], 0);
    es_pii_master_wipe(&m);
    cr_assert_eq(m.key[0], 0);
}

/* The master key: from the setting, from its file, from `factord run`'s
 * development file, or none (personal data in clear). */
Test(pii_keys, master_key_sources)
{
    char dir[] = "/tmp/factord-pii-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    es_config cfg = {0};
    cfg.state_dir = dir;
    es_error err = {0};
    es_pii_master m;
    bool have = true;
    cr_assert_eq(es_pii_master_load(&cfg, true, &m, &have, &err), ES_OK, "%s", err.text);
    cr_assert_not(have, "no key anywhere: none");

    char hex[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    cfg.pii_key = hex;
    cr_assert_eq(es_pii_master_load(&cfg, true, &m, &have, &err), ES_OK, "%s", err.text);
    cr_assert(have);
    cr_assert_eq(m.key[1], 1);
    cr_assert_eq(m.key[31], 0x1f);
    es_pii_master h;
    cr_assert_eq(es_pii_master_from_hex(hex, &h, &err), ES_OK);
    cr_assert_str_eq(h.key_id, m.key_id);
    char bad[] = "0001";
    cfg.pii_key = bad;
    cr_assert_eq(es_pii_master_load(&cfg, true, &m, &have, &err), ES_EINVAL);
    cr_assert(strstr(err.text, "FACTORD_PII_KEY"), "%s", err.text);
    cr_assert_not(have);
    cr_assert_eq(es_pii_master_from_hex("zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", &h, &err),
                 ES_EINVAL);
    cfg.pii_key = NULL;

    /* `factord run`: a development key, made once, then found by the tools */
    bool created = false;
    cr_assert_eq(es_pii_master_ensure_dev(&cfg, &created, &err), ES_OK, "%s", err.text);
    cr_assert(created);
    cr_assert_not_null(cfg.pii_key_file);
    es_pii_master a, b;
    cr_assert_eq(es_pii_master_load(&cfg, false, &a, &have, &err), ES_OK, "%s", err.text);
    cr_assert(have);
    free(cfg.pii_key_file);
    cfg.pii_key_file = NULL;
    cr_assert_eq(es_pii_master_load(&cfg, false, &b, &have, &err), ES_OK);
    cr_assert_not(have, "without the fallback the state folder is not read");
    cr_assert_eq(es_pii_master_load(&cfg, true, &b, &have, &err), ES_OK);
    cr_assert(have);
    cr_assert_str_eq(a.key_id, b.key_id);
    cr_assert_eq(es_pii_master_ensure_dev(&cfg, &created, &err), ES_OK);
    cr_assert_not(created, "made once");
    es_pii_master c;
    cr_assert_eq(es_pii_master_load(&cfg, false, &c, &have, &err), ES_OK);
    cr_assert_str_eq(c.key_id, a.key_id);
    free(cfg.pii_key_file);
    char path[256];
    snprintf(path, sizeof path, "%s/pii.key", dir);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600);
    unlink(path);
    rmdir(dir);
}
